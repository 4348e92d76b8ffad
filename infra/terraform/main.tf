# rtp on GCP: network, buckets, Artifact Registry, Pub/Sub, service accounts.
# The online store is in store.tf, GKE in gke.tf. Walkthrough: infra/README.md.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Same list as the `gcloud services enable` line of infra/README.md (a test keeps
  # them equal); enabled here too so a plain `terraform apply` is complete.
  services = [
    "artifactregistry.googleapis.com",
    "bigtable.googleapis.com",
    "bigtableadmin.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
  ]

  registry    = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  pubsub_sa   = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  workload_id = "${var.project_id}.svc.id.goog"
}

resource "google_project_service" "apis" {
  for_each           = toset(local.services)
  service            = each.value
  disable_on_destroy = false
}

# --- Network: one subnetwork for Dataflow workers (no public IPs) and GKE -----------

resource "google_compute_network" "rtp" {
  name                    = var.name_prefix
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

resource "google_compute_subnetwork" "rtp" {
  name                     = var.name_prefix
  region                   = var.region
  network                  = google_compute_network.rtp.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true # workers without public IPs reach Google APIs

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }
}

# Workers without public IPs still need PyPI if --setup_file pulls a missing
# dependency; Cloud NAT gives them egress without exposing them.
resource "google_compute_router" "rtp" {
  name    = var.name_prefix
  region  = var.region
  network = google_compute_network.rtp.id
}

resource "google_compute_router_nat" "rtp" {
  name                               = var.name_prefix
  router                             = google_compute_router.rtp.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

# Dataflow workers talk to each other on 12345-12346 (shuffle, streaming).
resource "google_compute_firewall" "dataflow_internal" {
  name        = "${var.name_prefix}-dataflow-internal"
  network     = google_compute_network.rtp.id
  direction   = "INGRESS"
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }
}

# --- Buckets: models (read-only for runtime identities) and Dataflow scratch ---------
# Two buckets so that "read models" can be granted without "read/write staging".

resource "google_storage_bucket" "models" {
  name                        = "${var.project_id}-${var.name_prefix}-models"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "dataflow" {
  name                        = "${var.project_id}-${var.name_prefix}-dataflow"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # Beam warns about soft delete on staging/temp buckets (it bills for churn).
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["tmp/", "staging/", "cloudbuild/"]
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.apis]
}

# TF Serving on GKE reads this file (gs:// base paths). The export's own
# MODEL_BASE/models.config holds the exporting machine's paths and is not used here.
resource "google_storage_bucket_object" "models_config" {
  bucket       = google_storage_bucket.models.name
  name         = "serving/models.config"
  content_type = "text/plain"
  content = templatefile("${path.module}/templates/models.config.tftpl", {
    model_base = "gs://${google_storage_bucket.models.name}/models"
  })
}

resource "google_artifact_registry_repository" "images" {
  repository_id = var.name_prefix
  location      = var.region
  format        = "DOCKER"
  description   = "rtp images: rtp (service, local stream) and rtp-dataflow (flex template + SDK worker)"
  depends_on    = [google_project_service.apis]
}

# --- Pub/Sub -----------------------------------------------------------------------

resource "google_pubsub_topic" "events" {
  name       = var.events_topic
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letters" {
  name       = var.dead_letter_topic
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "undeliverable" {
  name       = var.undeliverable_topic
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "events" {
  name                       = var.events_subscription
  topic                      = google_pubsub_topic.events.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention
  # A restarted job seeks back to its store's progress mark (beam_pipelines/resume.py):
  # the messages the killed job had acknowledged but not yet stored come again.
  retain_acked_messages = true

  expiration_policy {
    ttl = "" # never expires, also while no job reads it
  }

  # Backstop for messages the job never acknowledges (Dataflow acks after the
  # first fused stage commits; best effort on Pub/Sub's side). Invalid events are
  # not this: the job dead-letters them itself, with a reason, on dead_letters.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.undeliverable.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# A topic without subscriptions drops what is published to it: keep both
# dead-letter streams until someone reads them.
resource "google_pubsub_subscription" "dead_letters" {
  name                       = "${var.dead_letter_topic}-audit"
  topic                      = google_pubsub_topic.dead_letters.id
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "undeliverable" {
  name                       = "${var.undeliverable_topic}-audit"
  topic                      = google_pubsub_topic.undeliverable.id
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent forwards to the dead-letter topic and must be able to
# acknowledge on the source subscription.
resource "google_pubsub_topic_iam_member" "undeliverable_agent" {
  topic  = google_pubsub_topic.undeliverable.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_sa
}

resource "google_pubsub_subscription_iam_member" "events_agent" {
  subscription = google_pubsub_subscription.events.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_sa
}

# --- Service accounts (least privilege, on the specific resources) -------------------

resource "google_service_account" "pipeline" {
  account_id   = "${var.name_prefix}-pipeline"
  display_name = "rtp streaming job (Dataflow launcher and workers)"
}

resource "google_service_account" "service" {
  account_id   = "${var.name_prefix}-service"
  display_name = "rtp recommendation service (GKE)"
}

resource "google_service_account" "tfserving" {
  account_id   = "${var.name_prefix}-tfserving"
  display_name = "rtp TF Serving (GKE)"
}

resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "rtp image builds (Cloud Build)"
}

# Pipeline: run Dataflow work, read its subscription, publish dead letters, read
# models, scratch space in the Dataflow bucket, pull its image.
resource "google_project_iam_member" "pipeline_dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = google_service_account.pipeline.member
}

resource "google_pubsub_subscription_iam_member" "pipeline_subscriber" {
  subscription = google_pubsub_subscription.events.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.pipeline.member
}

resource "google_pubsub_subscription_iam_member" "pipeline_subscription_viewer" {
  subscription = google_pubsub_subscription.events.id
  role         = "roles/pubsub.viewer"
  member       = google_service_account.pipeline.member
}

resource "google_pubsub_topic_iam_member" "pipeline_dead_letters" {
  topic  = google_pubsub_topic.dead_letters.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.pipeline.member
}

resource "google_storage_bucket_iam_member" "pipeline_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.pipeline.member
}

resource "google_storage_bucket_iam_member" "pipeline_scratch" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.pipeline.member
}

resource "google_artifact_registry_repository_iam_member" "pipeline_pull" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.pipeline.member
}

# Service: publish events (impressions and engagements close the loop), read models.
resource "google_pubsub_topic_iam_member" "service_publisher" {
  topic  = google_pubsub_topic.events.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.service.member
}

resource "google_storage_bucket_iam_member" "service_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.service.member
}

# TF Serving: read models (and serving/models.config).
resource "google_storage_bucket_iam_member" "tfserving_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.tfserving.member
}

# Build: read the uploaded source from the Dataflow bucket, push images, write logs.
resource "google_storage_bucket_iam_member" "build_source" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_push" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}
