"""Start one Ray worker node of a loopback cluster (cluster/local.sh add-node), then exit, leaving its daemons.

`ray start --address` refuses a second node on a machine whose Ray binds to 127.0.0.1
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), and with that variable set to 1 it binds every node to the host's
routable address instead. This does what `ray start --address` does, minus that check, with the node on
127.0.0.1: its raylet, agents and workers stay in the caller's process group, so killing that group is a
node loss.
"""

from __future__ import annotations

import argparse
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: every address is 127.0.0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the head's GCS address, host:port")
    parser.add_argument("--num-cpus", type=int, default=1)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--object-store-mib", type=int, default=150)
    args = parser.parse_args()

    import ray._private.node
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    from ray._private.parameter import RayParams

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # as `ray start`: the machine's token

    params = RayParams(
        gcs_address=args.address,
        node_ip_address="127.0.0.1",
        node_name=args.node_name,
        num_cpus=args.num_cpus,
        num_gpus=0,
        object_store_memory=args.object_store_mib * 2**20,
        temp_dir=args.temp_dir,
        dashboard_agent_listen_port=None,  # free ports: several nodes share the machine
        min_worker_port=0,
        max_worker_port=0,
        include_log_monitor=False,
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    print(f"node {args.node_name} started: {node.node_id}", flush=True)


if __name__ == "__main__":
    main()
