output "events_topic" {
  description = "Engagement events topic (clients and the service publish here)."
  value       = google_pubsub_topic.events.id
}

output "events_subscription" {
  description = "--input_subscription of the streaming job."
  value       = google_pubsub_subscription.events.id
}

output "dead_letter_topic" {
  description = "--dead_letter_topic of the streaming job."
  value       = google_pubsub_topic.dead_letters.id
}

output "undeliverable_topic" {
  description = "Dead-letter topic of the events subscription's dead-letter policy."
  value       = google_pubsub_topic.undeliverable.id
}

output "models_bucket" {
  description = "Bucket of the exported models (upload MODEL_BASE to gs://<bucket>/models)."
  value       = google_storage_bucket.models.name
}

output "dataflow_bucket" {
  description = "Bucket of the flex template spec, staging, temp files and build sources."
  value       = google_storage_bucket.dataflow.name
}

output "registry" {
  description = "Artifact Registry path for docker images."
  value       = local.registry
}

output "subnetwork" {
  description = "--subnetwork of the Dataflow job (workers reach the online store on it)."
  value       = "regions/${var.region}/subnetworks/${google_compute_subnetwork.rtp.name}"
}

output "pipeline_service_account" {
  description = "--service-account-email of the Dataflow job."
  value       = google_service_account.pipeline.email
}

output "build_service_account" {
  description = "--service-account of gcloud builds submit."
  value       = google_service_account.build.id
}

output "gke_cluster" {
  description = "GKE cluster name (gcloud container clusters get-credentials NAME --region REGION)."
  value       = google_container_cluster.rtp.name
}

output "store_config_yaml" {
  description = "Online store config (feature_repo/store.py) for the streaming job: save as infra/generated/store.yaml before building the template image."
  value       = local.store_config_yaml
}

output "serving_config_yaml" {
  description = "Service config (serving/config.py) for GKE: save as infra/generated/serving.yaml, applied as ConfigMap rtp-serving."
  value = templatefile("${path.module}/templates/serving.yaml.tftpl", {
    store_json   = jsonencode(yamldecode(local.store_config_yaml))
    namespace    = var.k8s_namespace
    events_topic = google_pubsub_topic.events.id
  })
}

output "k8s_env" {
  description = "Variables of the infra/k8s manifests: save as infra/generated/k8s.env for infra/k8s/render.sh."
  value = templatefile("${path.module}/templates/k8s.env.tftpl", {
    namespace       = var.k8s_namespace
    service_image   = "${local.registry}/rtp:${var.image_tag}"
    tfserving_image = var.tfserving_image
    models_bucket   = google_storage_bucket.models.name
    service_gsa     = google_service_account.service.email
    tfserving_gsa   = google_service_account.tfserving.email
  })
}
