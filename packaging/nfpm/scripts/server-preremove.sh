#!/bin/sh
# mirage-server: before removal (not on upgrade). /etc/mirage stays.
set -e
case "$1" in upgrade|1) exit 0 ;; esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now mirage-server.service >/dev/null 2>&1 || true
fi
exit 0
