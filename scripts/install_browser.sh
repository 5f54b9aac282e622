#!/usr/bin/env bash
# The Chromium that the browser tests (pytest -m browser) drive through Playwright.
#
# Prints the Chromium found or installed and exits 0; exits 1 saying how to install it otherwise.
# Playwright itself is a Python package (the test extra) and is pointed at this Chromium with
# executable_path: `playwright install` is never run, so nothing is downloaded at test time.
set -euo pipefail

find_chromium() {  # the same search as tests/_browser.py: chromium_path()
  if [[ -n "${MUSE_MINI_CHROMIUM:-}" ]]; then
    command -v "$MUSE_MINI_CHROMIUM" && return 0
    echo "MUSE_MINI_CHROMIUM: expected an executable Chromium, got '$MUSE_MINI_CHROMIUM'" >&2
    exit 1
  fi
  local name
  for name in chromium chromium-browser google-chrome; do
    command -v "$name" && return 0
  done
  return 1
}

if find_chromium; then
  exit 0
fi

if [[ "$EUID" == 0 ]] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Debian packages it as chromium, Ubuntu as chromium-browser.
  apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || apt-get install -y -qq --no-install-recommends chromium-browser >/dev/null
  if find_chromium; then
    exit 0
  fi
  echo "install_browser.sh: apt-get installed a package but no chromium is on PATH" >&2
  exit 1
fi

echo "install_browser.sh: no Chromium found; install one (Debian: sudo apt-get install chromium," \
     "Ubuntu: chromium-browser) or set MUSE_MINI_CHROMIUM to its path" >&2
exit 1
