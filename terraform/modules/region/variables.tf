# One Meridian region's stack. Its own topology comes from `regions` (every
# region of the deployment, as `meridian terraform-vars` writes them from
# regions/*.toml); everything else is shared sizing with defaults here, so
# that envs/prod passes the same objects to every region.

variable "name" {
  type        = string
  description = "The Meridian region this stack runs (a key of `regions`, e.g. `us-east`): named in user ids, topics, resource names."

  validation {
    condition     = can(regex("^[a-z0-9-]{1,32}$", var.name))
    error_message = "A region name is 1-32 characters of [a-z0-9-] (crates/region/src/config.rs)."
  }
}

variable "regions" {
  type = map(object({
    aws_region             = string
    vpc_cidr               = string
    gateway_host           = string
    gateway_port           = number
    core_host              = string
    core_port              = number
    bucket                 = string
    peers                  = list(string)
    client_prefixes        = list(string)
    max_clock_offset_ms    = number
    log_partitions         = number
    log_replication_factor = number
  }))
  description = "Every region of the deployment, keyed by name: the content of envs/prod/regions.auto.tfvars.json. This stack renders every region's file from it (a process reads them all), and takes its peers' VPC CIDRs and buckets from it."

  validation {
    condition = alltrue(flatten([
      for name, region in var.regions : [for peer in region.peers : contains(keys(var.regions), peer) && peer != name]
    ]))
    error_message = "Every peer must be another region of `regions`."
  }

  validation {
    condition     = alltrue([for region in values(var.regions) : can(cidrsubnet(region.vpc_cidr, 8, 0)) && try(tonumber(split("/", region.vpc_cidr)[1]) == 16, false)])
    error_message = "Every vpc_cidr must be a /16: the subnet plan (network.tf) carves /20s and /24s out of it."
  }
}

variable "internal_zone_id" {
  type        = string
  description = "Id of the private hosted zone `meridian.internal` (created by modules/global): this stack associates its VPC with it and publishes `core.<region>.meridian.internal` there."
}

variable "release" {
  type = object({
    meridian_url      = string
    ami_id            = optional(string)
    ami_ssm_parameter = optional(string, "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
  })
  description = "What the instances run. `meridian_url`: the `meridian` binary (built with `--features fdb`, linux x86_64) as an S3 URL `s3://bucket/key`, fetched with the instance role. `ami_id`: an Amazon Linux 2023 AMI to pin (recommended in production: a new AMI replaces every gateway and the core); null takes the latest from `ami_ssm_parameter`."

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", var.release.meridian_url))
    error_message = "release.meridian_url must be s3://bucket/key (the instance role grants s3:GetObject on exactly that object)."
  }
}

variable "network" {
  type = object({
    single_nat_gateway    = optional(bool, false)
    availability_zones    = optional(list(string))
    flow_log_traffic_type = optional(string, "ALL")
  })
  default     = {}
  description = "The VPC. `single_nat_gateway`: one NAT gateway for the three AZs (cheaper; an AZ outage then cuts the others' outbound AWS API calls) instead of one per AZ. `availability_zones`: three AZ names (default: the AWS region's a, b and c; pick AZs that offer the instance types and MSK). The first holds FoundationDB's primary datacenter, the second its standby, the third its satellite logs. `flow_log_traffic_type`: ALL, ACCEPT or REJECT."
  nullable    = false

  validation {
    condition     = try(length(var.network.availability_zones), 3) == 3
    error_message = "network.availability_zones names exactly three AZs."
  }

  validation {
    condition     = contains(["ALL", "ACCEPT", "REJECT"], var.network.flow_log_traffic_type)
    error_message = "network.flow_log_traffic_type is ALL, ACCEPT or REJECT."
  }
}

variable "edge" {
  type = object({
    tcp_idle_timeout_seconds      = optional(number, 600)
    deregistration_delay_seconds  = optional(number, 300)
    health_check_interval_seconds = optional(number, 10)
    deletion_protection           = optional(bool, true)
  })
  default     = {}
  description = "The gateways' network load balancer. `tcp_idle_timeout_seconds`: how long an idle flow is kept (60-6000; gateways ping WebSockets every 20 s, so any value above that keeps them). `deregistration_delay_seconds`: how long a draining gateway keeps its connections before the balancer closes them (connection_termination), so clients reconnect elsewhere. `deletion_protection` (both NLBs): set false only to decommission the region."
  nullable    = false

  validation {
    condition     = var.edge.tcp_idle_timeout_seconds >= 60 && var.edge.tcp_idle_timeout_seconds <= 6000
    error_message = "edge.tcp_idle_timeout_seconds is 60-6000 (NLB limits)."
  }

  validation {
    condition     = var.edge.deregistration_delay_seconds >= 0 && var.edge.deregistration_delay_seconds <= 3600
    error_message = "edge.deregistration_delay_seconds is 0-3600."
  }

  validation {
    condition     = contains([10, 30], var.edge.health_check_interval_seconds)
    error_message = "edge.health_check_interval_seconds is 10 or 30."
  }
}

variable "gateways" {
  type = object({
    instance_type       = optional(string, "c7i.large")
    min_size            = optional(number, 3)
    max_size            = optional(number, 12)
    desired_capacity    = optional(number, 3)
    cpu_target_percent  = optional(number, 50)
    root_volume_size_gb = optional(number, 20)
    admin_port          = optional(number, 9100)
  })
  default     = {}
  description = "The gateways' auto-scaling group (stateless; any number). Scaling tracks average CPU at `cpu_target_percent`; `desired_capacity` applies when the group is created and when scaling is off. Zero everywhere keeps the group empty (first apply, draining a region). `admin_port`: the gateway's plaintext /metrics, /healthz, /readyz (--admin-listen), reachable from the VPC only; the client port serves /healthz and /readyz but not /metrics."
  nullable    = false

  validation {
    condition     = var.gateways.min_size >= 0 && var.gateways.min_size <= var.gateways.desired_capacity && var.gateways.desired_capacity <= var.gateways.max_size
    error_message = "gateways: 0 <= min_size <= desired_capacity <= max_size."
  }

  validation {
    condition     = var.gateways.admin_port > 1024 && var.gateways.admin_port < 65536
    error_message = "gateways.admin_port is an unprivileged port (the gateway runs as an unprivileged user)."
  }
}

variable "core" {
  type = object({
    instance_type       = optional(string, "c7i.2xlarge")
    instances           = optional(number, 1)
    admin_port          = optional(number, 9100)
    root_volume_size_gb = optional(number, 30)
  })
  default     = {}
  description = "The region's core. `instances` is 1 (running) or 0 (stopped: first apply, draining): a region has exactly one core, and on FoundationDB nothing but this group stops a second one (docs/operations.md, \"Running the parts as processes\"). `admin_port`: the core's plaintext /metrics, /healthz, /readyz (--admin-listen)."
  nullable    = false

  validation {
    condition     = contains([0, 1], var.core.instances)
    error_message = "core.instances is 0 or 1: Meridian runs exactly one core per region (two cores on one FoundationDB cluster is untested and unsafe)."
  }

  validation {
    condition     = var.core.admin_port > 1024 && var.core.admin_port < 65536
    error_message = "core.admin_port is an unprivileged port (the core runs as an unprivileged user)."
  }
}

variable "foundationdb" {
  type = object({
    version                      = optional(string, "7.3.77")
    package_base_url             = optional(string, "https://github.com/apple/foundationdb/releases/download")
    instance_type                = optional(string, "m7i.xlarge")
    satellite_instance_type      = optional(string, "m7i.large")
    hosts_per_datacenter         = optional(number, 3)
    satellite_hosts              = optional(number, 3)
    process_classes              = optional(list(string), ["storage", "transaction", "transaction", "stateless"])
    satellite_process_classes    = optional(list(string), ["transaction"])
    data_volume_size_gb          = optional(number, 200)
    data_volume_type             = optional(string, "gp3")
    data_volume_iops             = optional(number, 3000)
    data_volume_throughput_mibps = optional(number, 125)
    port_range_start             = optional(number, 4500)
    port_range_end               = optional(number, 4599)
    redundancy_mode              = optional(string, "double")
    storage_engine               = optional(string, "ssd-2")
    logs                         = optional(number, 3)
    satellite_logs               = optional(number, 2)
    coordinators_per_datacenter  = optional(number, 3)
    termination_protection       = optional(bool, true)
  })
  default     = {}
  description = "The region's FoundationDB cluster (fdb.tf): `hosts_per_datacenter` hosts of `instance_type` in each of the two full datacenters (primary and standby AZs), `satellite_hosts` of `satellite_instance_type` in the satellite AZ, each with an EBS data volume (`data_volume_*`). Each host runs one fdbserver per entry of its `*_process_classes`, on ports from `port_range_start` (a full datacenter's hosts run two transaction processes: one for its own logs, one for when it is the other datacenter's satellite). `redundancy_mode` is per datacenter (double: 2 copies in each of the 2 full datacenters). `version` must be a 7.3 release (the client speaks API 730). `termination_protection`: hosts cannot be terminated by API (set false only to replace one deliberately or to decommission)."
  nullable    = false

  validation {
    condition     = startswith(var.foundationdb.version, "7.3.")
    error_message = "foundationdb.version must be 7.3.x: Meridian's client speaks API version 730 (docs/foundationdb.md)."
  }

  validation {
    condition     = var.foundationdb.hosts_per_datacenter >= 3 && var.foundationdb.satellite_hosts >= 2
    error_message = "FoundationDB needs at least 3 hosts per full datacenter (double/triple replication with a spare) and 2 satellite hosts (one_satellite_double)."
  }

  validation {
    condition     = contains(["double", "triple"], var.foundationdb.redundancy_mode)
    error_message = "foundationdb.redundancy_mode is double or triple (per datacenter)."
  }

  validation {
    condition     = contains(["gp3", "io2"], var.foundationdb.data_volume_type)
    error_message = "foundationdb.data_volume_type is gp3 or io2 (both take iops; FoundationDB wants a fast fsync)."
  }

  validation {
    condition = (
      var.foundationdb.port_range_start >= 1024 &&
      var.foundationdb.port_range_start + max(length(var.foundationdb.process_classes), length(var.foundationdb.satellite_process_classes)) - 1 <= var.foundationdb.port_range_end
    )
    error_message = "foundationdb.port_range_start..port_range_end must hold one port per fdbserver process of a host."
  }

  validation {
    condition     = var.foundationdb.coordinators_per_datacenter >= 1 && var.foundationdb.coordinators_per_datacenter <= min(var.foundationdb.hosts_per_datacenter, var.foundationdb.satellite_hosts)
    error_message = "foundationdb.coordinators_per_datacenter is at least 1 and at most the host count of every datacenter (one coordinator per host)."
  }
}

variable "kafka" {
  type = object({
    version                = optional(string, "3.8.x")
    broker_instance_type   = optional(string, "kafka.m7g.large")
    brokers_per_az         = optional(number, 1)
    volume_size_gb         = optional(number, 500)
    enhanced_monitoring    = optional(string, "DEFAULT")
    scram_password_version = optional(number, 1)
  })
  default     = {}
  description = "The region's MSK cluster (msk.tf): `brokers_per_az` brokers in each of the three AZs. `volume_size_gb` per broker: Meridian's topics keep 7 days (retention.ms) at its replication factor. Bump `scram_password_version` to write a new random SCRAM password (then replace the cores so they read it)."
  nullable    = false

  validation {
    condition     = var.kafka.brokers_per_az >= 1 && var.kafka.volume_size_gb >= 1 && var.kafka.volume_size_gb <= 16384
    error_message = "kafka: at least one broker per AZ; 1-16384 GiB per broker."
  }

  validation {
    condition     = contains(["DEFAULT", "PER_BROKER", "PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION"], var.kafka.enhanced_monitoring)
    error_message = "kafka.enhanced_monitoring is an MSK monitoring level."
  }
}

variable "media" {
  type = object({
    expiry_days          = optional(number, 30)
    cors_allowed_origins = optional(list(string), [])
    replication = optional(map(object({
      destination_bucket_arn  = string
      destination_kms_key_arn = string
    })), {})
  })
  default     = {}
  description = "The media bucket. `expiry_days`: objects expire after this many days (Meridian's retention is 30 days). `cors_allowed_origins`: browser origins allowed to PUT and GET with presigned URLs (empty: no CORS, native clients only). `replication`: optional S3 cross-region replication, keyed by the source region's name (destination bucket ARN, versioned, and the KMS key ARN that encrypts replicas there)."
  nullable    = false

  validation {
    condition     = var.media.expiry_days >= 1
    error_message = "media.expiry_days is at least 1."
  }
}

variable "observability" {
  type = object({
    metrics_namespace                    = optional(string, "Meridian")
    alarm_email                          = optional(string)
    log_retention_days                   = optional(number, 365)
    replication_lag_threshold_ms         = optional(number, 30000)
    outbox_depth_threshold               = optional(number, 10000)
    commit_p99_threshold_seconds         = optional(number, 0.05)
    fdb_commit_latency_threshold_seconds = optional(number, 0.25)
  })
  default     = {}
  description = "Metrics and alarms (alarms.tf). The CloudWatch agent publishes Meridian's Prometheus metrics into `metrics_namespace` with the dimension MeridianRegion. `alarm_email` subscribes an address to the alarm topic (null: subscribe yourself). Thresholds: replication lag (ms), outbox depth (entries), p99 of the core's store commits (s; meridian_kv_engine_write_seconds, FoundationDB or fjall), FoundationDB's commit latency probe (s)."
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.observability.log_retention_days)
    error_message = "observability.log_retention_days is a CloudWatch Logs retention value."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags added to every resource of the stack (besides the provider's default_tags)."
  nullable    = false
}
