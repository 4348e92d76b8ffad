# GKE Autopilot runs TF Serving and the recommendation service (manifests in
# infra/k8s, applied with kubectl: see infra/README.md for why not Terraform).
# Workload Identity maps each Kubernetes service account to its Google one.

resource "google_container_cluster" "rtp" {
  name                = var.gke_cluster_name
  location            = var.region
  enable_autopilot    = true
  network             = google_compute_network.rtp.id
  subnetwork          = google_compute_subnetwork.rtp.id
  deletion_protection = var.deletion_protection

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  release_channel {
    channel = "REGULAR"
  }
  depends_on = [google_project_service.apis]
}

resource "google_service_account_iam_member" "service_workload_identity" {
  service_account_id = google_service_account.service.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_id}[${var.k8s_namespace}/recommender]"
  depends_on         = [google_container_cluster.rtp] # the identity pool comes with the cluster
}

resource "google_service_account_iam_member" "tfserving_workload_identity" {
  service_account_id = google_service_account.tfserving.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_id}[${var.k8s_namespace}/tfserving]"
  depends_on         = [google_container_cluster.rtp]
}
