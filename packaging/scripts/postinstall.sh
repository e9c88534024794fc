#!/bin/sh
# After install (deb: postinst configure [OLD-VERSION]; rpm: %post with the
# number of installed instances). A fresh install enables and starts the
# daemon (a device plugin the user installed should run; it waits for the
# kubelet by itself); an upgrade restarts it only if it was running, so a
# user's disable/stop is kept. Without systemd as PID 1 (containers,
# chroots, image builds) it only says how to start it: never a failure.
set -e

unit=smarter-device-manager.service

upgrade=no
case "$1" in
	configure) [ -n "$2" ] && upgrade=yes ;;
	abort-upgrade|abort-remove|abort-deconfigure) upgrade=yes ;;
	[0-9]*) [ "$1" -ge 2 ] && upgrade=yes ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ "$upgrade" = yes ]; then
		systemctl try-restart "$unit" ||
			echo "smarter-device-manager: restarting $unit failed; see: journalctl -u $unit" >&2
	else
		systemctl enable --now "$unit" ||
			echo "smarter-device-manager: starting $unit failed; see: journalctl -u $unit" >&2
	fi
else
	echo "smarter-device-manager: systemd is not running; start the daemon with: smarter-device-manager --config /etc/smarter-device-manager/rules.toml (or systemctl enable --now $unit once systemd runs)"
fi
exit 0
