#!/bin/sh
# Before remove (deb: prerm remove|upgrade|...; rpm: %preun with the number
# of instances left, 0 on erase). On removal, stop and disable the daemon;
# on upgrade leave it running (the new postinstall restarts it).
set -e

unit=smarter-device-manager.service

case "$1" in
	remove|0) ;;
	*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop "$unit" || true
	systemctl disable "$unit" || true
fi
exit 0
