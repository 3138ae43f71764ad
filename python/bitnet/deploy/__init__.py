"""Getting a model onto a machine: the resumable set-up stages of ``bitnet setup`` /
``setup_env.py`` (``bootstrap``) and the checksum-verified download of the Kubernetes init
container, ``python -m bitnet.deploy.fetch`` (``fetch``)."""
