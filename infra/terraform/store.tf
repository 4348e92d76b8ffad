# The online store, chosen by var.online_store: Memorystore Redis or Bigtable.
# Both render the same thing: the store config of feature_repo/store.py that the
# streaming job and the service read (outputs store_config_yaml, serving_config_yaml).

locals {
  redis    = var.online_store == "redis"
  bigtable = var.online_store == "bigtable"

  store_config_yaml = templatefile("${path.module}/templates/store.${var.online_store}.yaml.tftpl", {
    feast_project     = var.feast_project
    redis_host        = try(google_redis_instance.store[0].host, "")
    redis_port        = try(google_redis_instance.store[0].port, 6379)
    project           = var.project_id
    bigtable_instance = try(google_bigtable_instance.store[0].name, "")
  })

  # Feast names one Bigtable table per entity set: <feast project>.<entity>.
  bigtable_tables = toset(["${var.feast_project}.user", "${var.feast_project}.item"])
}

# --- Memorystore Redis: reached over the VPC (no IAM on the data path), so access is
# "being on the rtp network": Dataflow workers (--subnetwork) and GKE pods.
resource "google_redis_instance" "store" {
  count              = local.redis ? 1 : 0
  name               = "${var.name_prefix}-online"
  region             = var.region
  tier               = var.redis_tier
  memory_size_gb     = var.redis_memory_size_gb
  redis_version      = var.redis_version
  authorized_network = google_compute_network.rtp.id
  connect_mode       = "DIRECT_PEERING"
  depends_on         = [google_project_service.apis]
}

# --- Bigtable: instance, the two tables Feast writes, their column family ----------

resource "google_bigtable_instance" "store" {
  count               = local.bigtable ? 1 : 0
  name                = "${var.name_prefix}-online"
  deletion_protection = var.deletion_protection

  cluster {
    cluster_id   = "${var.name_prefix}-online-c1"
    zone         = var.bigtable_zone != "" ? var.bigtable_zone : "${var.region}-b"
    storage_type = var.bigtable_storage_type

    autoscaling_config {
      min_nodes  = var.bigtable_min_nodes
      max_nodes  = var.bigtable_max_nodes
      cpu_target = var.bigtable_cpu_target
    }
  }
  depends_on = [google_project_service.apis]
}

# Created here so that runtime identities need no admin role: Feast's apply finds
# the tables and the `features` family and creates nothing.
resource "google_bigtable_table" "features" {
  for_each      = local.bigtable ? local.bigtable_tables : toset([])
  name          = each.value
  instance_name = google_bigtable_instance.store[0].name

  column_family {
    family = "features"
  }
}

# Feast's default for the family (BigtableOnlineStoreConfig.max_versions = 2).
resource "google_bigtable_gc_policy" "features" {
  for_each        = google_bigtable_table.features
  instance_name   = google_bigtable_instance.store[0].name
  table           = each.value.name
  column_family   = "features"
  deletion_policy = "ABANDON"

  max_version {
    number = 2
  }
}

resource "google_bigtable_instance_iam_member" "pipeline_store" {
  count    = local.bigtable ? 1 : 0
  instance = google_bigtable_instance.store[0].name
  role     = "roles/bigtable.user"
  member   = google_service_account.pipeline.member
}

resource "google_bigtable_instance_iam_member" "service_store" {
  count    = local.bigtable ? 1 : 0
  instance = google_bigtable_instance.store[0].name
  role     = "roles/bigtable.reader"
  member   = google_service_account.service.member
}
