"""How cells reach a cluster: grid files, manifests, submitit executors, status from files, reruns."""
