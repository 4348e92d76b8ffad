variable "project_id" {
  description = "GCP project that holds everything below."
  type        = string
}

variable "region" {
  description = "Region of Dataflow, Pub/Sub-adjacent resources, Memorystore, GKE (regional Autopilot) and the buckets."
  type        = string
  default     = "europe-west1"
}

variable "online_store" {
  description = "Online feature store backend: \"redis\" (Memorystore) or \"bigtable\"."
  type        = string
  default     = "redis"

  validation {
    condition     = contains(["redis", "bigtable"], var.online_store)
    error_message = "online_store must be \"redis\" or \"bigtable\"."
  }
}

variable "feast_project" {
  description = "Feast project name (feature_repo.store feast_project): prefixes Redis keys and names the Bigtable tables <feast_project>.user and <feast_project>.item."
  type        = string
  default     = "rtp"
}

variable "name_prefix" {
  description = "Prefix of resource names (service accounts, network, buckets after the project id)."
  type        = string
  default     = "rtp"
}

# --- Pub/Sub -------------------------------------------------------------------

variable "events_topic" {
  description = "Topic the clients and the service publish engagement events to."
  type        = string
  default     = "engagement-events"
}

variable "events_subscription" {
  description = "Subscription of the events topic the streaming job reads (--input_subscription)."
  type        = string
  default     = "engagement-events-pipeline"
}

variable "dead_letter_topic" {
  description = "Topic the streaming job publishes rejected inputs to (--dead_letter_topic), JSON with reason."
  type        = string
  default     = "engagement-dead-letters"
}

variable "undeliverable_topic" {
  description = "Dead-letter topic of the events subscription's dead-letter policy: raw messages Pub/Sub gave up delivering."
  type        = string
  default     = "engagement-events-undeliverable"
}

variable "max_delivery_attempts" {
  description = "Delivery attempts (5..100) before Pub/Sub forwards an events message to the undeliverable topic."
  type        = number
  default     = 10
}

variable "message_retention" {
  description = "How long subscriptions keep unacknowledged messages (a stopped job can catch up within it)."
  type        = string
  default     = "604800s"
}

# --- Online store ----------------------------------------------------------------

variable "redis_tier" {
  description = "Memorystore tier: BASIC (no replica) or STANDARD_HA."
  type        = string
  default     = "STANDARD_HA"
}

variable "redis_memory_size_gb" {
  description = "Memorystore capacity, GiB."
  type        = number
  default     = 5
}

variable "redis_version" {
  description = "Memorystore Redis version."
  type        = string
  default     = "REDIS_7_2"
}

variable "bigtable_zone" {
  description = "Zone of the Bigtable cluster; empty: <region>-b."
  type        = string
  default     = ""
}

variable "bigtable_storage_type" {
  description = "Bigtable storage: SSD (low-latency reads, the serving path) or HDD."
  type        = string
  default     = "SSD"
}

variable "bigtable_min_nodes" {
  description = "Bigtable autoscaling lower bound, nodes."
  type        = number
  default     = 1
}

variable "bigtable_max_nodes" {
  description = "Bigtable autoscaling upper bound, nodes."
  type        = number
  default     = 3
}

variable "bigtable_cpu_target" {
  description = "Bigtable autoscaling CPU target, percent."
  type        = number
  default     = 60
}

# --- Network and GKE -------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the subnetwork used by Dataflow workers and GKE nodes."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "GKE pod range (secondary range \"pods\")."
  type        = string
  default     = "10.20.0.0/16"
}

variable "services_cidr" {
  description = "GKE service range (secondary range \"services\")."
  type        = string
  default     = "10.30.0.0/20"
}

variable "gke_cluster_name" {
  description = "Name of the GKE Autopilot cluster running TF Serving and the service."
  type        = string
  default     = "rtp"
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of infra/k8s (also fixes the Workload Identity bindings)."
  type        = string
  default     = "rtp"
}

variable "image_tag" {
  description = "Tag of the images built by infra/cloudbuild.yaml (rtp and rtp-dataflow)."
  type        = string
  default     = "v1"
}

variable "tfserving_image" {
  description = "TF Serving image; keep its version in step with tensorflow-serving-api in setup.py."
  type        = string
  default     = "tensorflow/serving:2.21.0"
}

variable "deletion_protection" {
  description = "Protect the GKE cluster and Bigtable instance from terraform destroy."
  type        = bool
  default     = true
}
