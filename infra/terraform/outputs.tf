output "namespace" {
  description = "Namespace of the server."
  value       = kubernetes_namespace_v1.bitnet.metadata[0].name
}

output "service_name" {
  description = "Service to send requests to (port 80)."
  value       = kubernetes_service_v1.bitnet.metadata[0].name
}

output "model_path" {
  description = "Where the server reads the model inside the pod."
  value       = local.model_path
  sensitive   = true
}
