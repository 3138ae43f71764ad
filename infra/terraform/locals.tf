# Values derived from the variables (kept apart so that tests/test_deploy.py can evaluate them
# with `terraform console` offline, without the kubernetes provider).
locals {
  labels = {
    "app.kubernetes.io/name"       = var.name
    "app.kubernetes.io/component"  = "server"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  port            = 8080
  model_is_remote = can(regex("^https?://", var.model_url))

  # A remote model is downloaded into the shared volume; a local path is used as is.
  model_path   = local.model_is_remote ? "/models/${basename(split("?", var.model_url)[0])}" : var.model_url
  grace_period = var.pre_stop_seconds + var.drain_seconds + 5
  gpu_args     = var.gpu.enabled ? ["--n-gpu-layers", tostring(var.gpu.n_gpu_layers)] : []
  server_args  = join(" ", concat(var.server_args, local.gpu_args, ["--grace", tostring(var.drain_seconds)]))

  # GPUs are an extended resource: Kubernetes wants them in limits (requests, when given, equal).
  gpu_resources = var.gpu.enabled ? { (var.gpu.resource) = tostring(var.gpu.count) } : {}
}
