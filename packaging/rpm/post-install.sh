# bitdust %post: creates the system user and group bitdust (sysusers.d) and
# tells systemd about the units. Starts and enables nothing: the admin
# chooses (systemctl enable --now bitdust-supplier ...). $1 is 1 on install,
# 2 or more on upgrade.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers bitdust.conf || :
elif ! getent passwd bitdust >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/bitdust --no-create-home \
        --shell /sbin/nologin --comment "BitDust daemons" bitdust || :
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    # An upgrade restarts the daemons that were running, on the new binaries.
    if [ "$1" -ge 2 ]; then
        systemctl try-restart bitdust-dht.service bitdust-supplier.service \
            bitdust-customer.service bitdust-rebuilder.service >/dev/null 2>&1 || :
    fi
fi
