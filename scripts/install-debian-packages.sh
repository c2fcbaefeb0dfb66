#!/bin/sh
# Install Debian packages for `make test` and `make bench` without leaving services running.
#
# rabbitmq-server's maintainer script starts a system RabbitMQ on install and enables it at
# boot (mosquitto's likewise); a system RabbitMQ on 5672/15672 then takes gateway's default
# ports, so `make run` fails or clients reach the wrong broker. The tests and the benchmark
# start private instances on free ports and never use the system services. So:
#   1. for the install only, a policy-rc.d answers 101 ("not allowed") to invoke-rc.d and
#      deb-systemd-invoke, so no service starts (a policy-rc.d already present, as in
#      container images, is used as it is and left in place);
#   2. afterwards each of those services that this run newly installed is stopped through
#      its service manager if it runs anyway (a present policy allowed it), and disabled;
#   3. the script fails if one of them still runs.
# A package that was installed before is not touched, and no process is signalled directly.
#
# usage: scripts/install-debian-packages.sh PACKAGE...   (as root, or with sudo)
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 64
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
POLICY=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
SERVICES="rabbitmq-server mosquitto"  # packages whose install starts a service

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
systemd_runs() { [ -d /run/systemd/system ]; }
running() {
    if systemd_runs; then
        systemctl is-active --quiet "$1"
    else
        service "$1" status >/dev/null 2>&1
    fi
}
stop_and_disable() {
    if running "$1"; then
        echo "stopping the $1 service the install started" >&2
        if systemd_runs; then $SUDO systemctl stop "$1"; else $SUDO service "$1" stop; fi
    fi
    if systemd_runs; then
        $SUDO systemctl disable --quiet "$1" || true
    else
        $SUDO update-rc.d "$1" disable >/dev/null 2>&1 || true
    fi
}

new=""
for pkg in "$@"; do
    for svc in $SERVICES; do
        if [ "$pkg" = "$svc" ] && ! installed "$pkg"; then new="$new $svc"; fi
    done
done

created=""
remove_policy() {
    if [ -n "$created" ]; then
        $SUDO rm -f "$POLICY"
        created=""
    fi
}
trap remove_policy EXIT
trap 'remove_policy; exit 130' INT TERM
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# no service starts during this install (removed after it)\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    created=1
fi

$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
remove_policy

for svc in $new; do
    stop_and_disable "$svc"
done
for svc in $new; do
    if running "$svc"; then
        echo "error: the $svc service still runs after the install; stop it with" \
             "'systemctl stop $svc' (or 'service $svc stop'): it takes gateway's ports" >&2
        exit 1
    fi
done
