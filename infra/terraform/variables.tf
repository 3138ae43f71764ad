variable "name" {
  description = "Name of the Deployment, Service and related objects."
  type        = string
  default     = "bitnet"
}

variable "namespace" {
  description = "Namespace created for the server."
  type        = string
  default     = "bitnet"
}

variable "image" {
  description = "bitnet-runtime (or bitnet-edge) image, e.g. ghcr.io/org/bitnet-runtime:0.1.0."
  type        = string
}

variable "replicas" {
  description = "Pods when the autoscaler is off (its minimum when it is on)."
  type        = number
  default     = 1
}

variable "model_url" {
  description = "GGUF model: a path inside the pod (a mounted volume) or an http(s) URL fetched by an init container."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.model_url) > 0
    error_message = "model_url must not be empty: pass -var=\"model_url=...\"."
  }
}

variable "model_sha256" {
  description = "Expected sha256 of the model file; the init container refuses a download that does not match."
  type        = string
  default     = ""

  validation {
    condition     = var.model_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.model_sha256))
    error_message = "model_sha256 must be 64 lowercase hex digits or empty."
  }
}

variable "server_args" {
  description = "Extra run_inference_server.py flags, kept in a ConfigMap (a change rolls the pods, no rebuild)."
  type        = list(string)
  default     = ["--threads", "auto", "--ctx-size", "4096", "--parallel", "1"]
}

variable "resource_requests" {
  description = "Container resource requests."
  type        = map(string)
  default = {
    cpu    = "2"
    memory = "3Gi"
  }
}

variable "resource_limits" {
  description = "Container resource limits (the CPU limit also caps the threads the server picks)."
  type        = map(string)
  default = {
    cpu    = "2"
    memory = "4Gi"
  }
}

variable "drain_seconds" {
  description = "Seconds running requests get after SIGTERM (the server's --grace)."
  type        = number
  default     = 30
}

variable "pre_stop_seconds" {
  description = "Pause before SIGTERM so the Service stops routing to the pod first."
  type        = number
  default     = 5
}

variable "startup_timeout_seconds" {
  description = "Longest model load (and download) the startup probe waits for."
  type        = number
  default     = 600
}

variable "enable_hpa" {
  description = "Create a HorizontalPodAutoscaler on CPU use."
  type        = bool
  default     = false
}

variable "hpa_max_replicas" {
  description = "Most pods the autoscaler may run."
  type        = number
  default     = 4
}

variable "hpa_cpu_utilization" {
  description = "Average CPU use (percent of requests) the autoscaler aims for."
  type        = number
  default     = 70
}

variable "gpu" {
  description = <<-EOT
    Optional GPU node pool. With enabled = true the pods request `count` GPUs of `resource`
    (an extended resource such as nvidia.com/gpu or amd.com/gpu), are scheduled on nodes
    matching `node_selector`, tolerate the pool's taints (`tolerations`; by default the
    nvidia.com/gpu taint GKE and the NVIDIA GPU operator put on GPU nodes) and the server gets
    `--n-gpu-layers n_gpu_layers`. BitNet ternary models always run on the CPU engine; GPUs
    serve other architectures (engine llama) through libllama, which needs an image whose
    llama.cpp was built with a GPU backend (`bitnet diagnose` says whether it was).
  EOT
  type = object({
    enabled       = bool
    count         = optional(number, 1)
    resource      = optional(string, "nvidia.com/gpu")
    node_selector = optional(map(string), {})
    tolerations = optional(list(object({
      key      = string
      operator = optional(string, "Equal")
      value    = optional(string)
      effect   = optional(string, "NoSchedule")
    })), [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }])
    n_gpu_layers = optional(number, 999)
  })
  default = { enabled = false }

  validation {
    condition     = var.gpu.count >= 1 && var.gpu.count <= 16 && floor(var.gpu.count) == var.gpu.count
    error_message = "gpu.count must be a whole number of GPUs from 1 to 16."
  }

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", var.gpu.resource))
    error_message = "gpu.resource must be an extended resource name such as nvidia.com/gpu or amd.com/gpu."
  }

  validation {
    condition = alltrue([
      for t in var.gpu.tolerations :
      contains(["Equal", "Exists"], t.operator) &&
      contains(["NoSchedule", "PreferNoSchedule", "NoExecute"], t.effect) &&
      (t.operator == "Exists" ? t.value == null : t.value != null)
    ])
    error_message = "gpu.tolerations: operator Equal (with a value) or Exists (without one); effect NoSchedule, PreferNoSchedule or NoExecute."
  }

  validation {
    condition     = var.gpu.n_gpu_layers >= 0 && floor(var.gpu.n_gpu_layers) == var.gpu.n_gpu_layers
    error_message = "gpu.n_gpu_layers must be a whole number >= 0 (999: every layer)."
  }
}
