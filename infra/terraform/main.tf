resource "kubernetes_namespace_v1" "bitnet" {
  metadata {
    name   = var.namespace
    labels = local.labels
  }
}

resource "kubernetes_secret_v1" "model" {
  metadata {
    name      = "${var.name}-model"
    namespace = kubernetes_namespace_v1.bitnet.metadata[0].name
    labels    = local.labels
  }

  data = {
    MODEL_URL    = var.model_url
    MODEL_PATH   = local.model_path
    MODEL_SHA256 = var.model_sha256
  }
}

resource "kubernetes_config_map_v1" "args" {
  metadata {
    name      = "${var.name}-args"
    namespace = kubernetes_namespace_v1.bitnet.metadata[0].name
    labels    = local.labels
  }

  data = {
    BITNET_SERVER_ARGS = local.server_args
  }
}

resource "kubernetes_deployment_v1" "bitnet" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.bitnet.metadata[0].name
    labels    = local.labels
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.labels
    }

    template {
      metadata {
        labels = local.labels
        annotations = {
          # New flags in the ConfigMap roll the pods.
          "bitnet/args-checksum" = sha256(local.server_args)
        }
      }

      spec {
        termination_grace_period_seconds = local.grace_period
        node_selector                    = var.gpu.enabled ? var.gpu.node_selector : null

        dynamic "toleration" {
          for_each = var.gpu.enabled ? var.gpu.tolerations : []
          content {
            key      = toleration.value.key
            operator = toleration.value.operator
            value    = toleration.value.value
            effect   = toleration.value.effect
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          fs_group        = 10001
        }

        dynamic "init_container" {
          for_each = local.model_is_remote ? [1] : []
          content {
            name    = "fetch-model"
            image   = var.image
            command = ["python", "-m", "bitnet.deploy.fetch"]
            args    = ["$(MODEL_URL)", "$(MODEL_PATH)", "--sha256", "$(MODEL_SHA256)"]

            env_from {
              secret_ref {
                name = kubernetes_secret_v1.model.metadata[0].name
              }
            }

            volume_mount {
              name       = "models"
              mount_path = "/models"
            }
          }
        }

        container {
          name  = "server"
          image = var.image

          # Same command path as local use: run_inference_server.py --host 0.0.0.0 --model ...
          command = ["/bin/sh", "-c"]
          args    = ["exec python /opt/bitnet/run_inference_server.py --host 0.0.0.0 --port ${local.port} --model \"$MODEL_PATH\" $BITNET_SERVER_ARGS"]

          port {
            name           = "http"
            container_port = local.port
          }

          env_from {
            secret_ref {
              name = kubernetes_secret_v1.model.metadata[0].name
            }
          }

          env_from {
            config_map_ref {
              name = kubernetes_config_map_v1.args.metadata[0].name
            }
          }

          resources {
            requests = merge(var.resource_requests, local.gpu_resources)
            limits   = merge(var.resource_limits, local.gpu_resources)
          }

          startup_probe {
            http_get {
              path = "/health"
              port = "http"
            }
            period_seconds    = 5
            failure_threshold = ceil(var.startup_timeout_seconds / 5)
          }

          liveness_probe {
            http_get {
              path = "/health"
              port = "http"
            }
            period_seconds    = 10
            timeout_seconds   = 5
            failure_threshold = 3
          }

          readiness_probe {
            http_get {
              path = "/ready"
              port = "http"
            }
            period_seconds    = 5
            timeout_seconds   = 3
            failure_threshold = 2
          }

          lifecycle {
            pre_stop {
              exec {
                command = ["sleep", tostring(var.pre_stop_seconds)]
              }
            }
          }

          volume_mount {
            name       = "models"
            mount_path = "/models"
          }
        }

        volume {
          name = "models"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "bitnet" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.bitnet.metadata[0].name
    labels    = local.labels
  }

  spec {
    selector = local.labels

    port {
      name        = "http"
      port        = 80
      target_port = "http"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "bitnet" {
  count = var.enable_hpa ? 1 : 0

  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.bitnet.metadata[0].name
    labels    = local.labels
  }

  spec {
    min_replicas = var.replicas
    max_replicas = var.hpa_max_replicas

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.bitnet.metadata[0].name
    }

    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.hpa_cpu_utilization
        }
      }
    }
  }
}
