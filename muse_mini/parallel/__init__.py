"""Many devices and hosts: the mesh (:mod:`.mesh`), the logical-axis rules and shardings
(:mod:`.rules`), and multi-process start-up and batch rows (:mod:`.hosts`)."""
