"""Child processes tiermesh starts on this machine (etcd, Envoy), and loopback ports for them.

Every process is started with loopback-only addresses, tracked by PID and stopped by PID;
data directories it creates are removed on stop.
"""
