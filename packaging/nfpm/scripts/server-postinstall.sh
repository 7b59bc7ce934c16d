#!/bin/sh
# mirage-server: after install or upgrade. The configuration is generated
# by the service on its first start and never overwritten here.
set -e
install -d -m 0700 /etc/mirage
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
	systemctl enable mirage-server.service >/dev/null 2>&1 || true
	# An upgrade restarts a running server; a new install waits for the
	# admin (edit /etc/mirage, then: systemctl start mirage-server).
	systemctl try-restart mirage-server.service >/dev/null 2>&1 || true
fi
exit 0
