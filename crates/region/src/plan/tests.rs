//! The plan's rules, without starting anything.

use std::path::Path;

use super::*;

/// A region file on `core`/`gateway`/`s3` ports `7000`/`8000`/`9000 +
/// base`, with `extra` TOML (top-level keys first) before its tables.
fn region(name: &str, base: u16, extra: &str) -> RegionConfig {
    let (core, gateway) = (7000 + base, 8000 + base);
    Deployment::parse(&format!(
        "name = \"{name}\"\n\
         {extra}\n\
         [listen]\ngateway = \"0.0.0.0:{gateway}\"\ncore = \"0.0.0.0:{core}\"\n\
         [advertise]\ngateway = \"gw.{name}:443\"\ncore = \"core.{name}:7443\"\n\
         [local]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         s3 = \"127.0.0.1:{}\"\n\
         [s3]\nbucket = \"media-{name}\"\n",
        9000 + base
    ))
    .expect("a valid region file")
}

/// us-east in three shards (its data in `use`), eu-west, and
/// ap-southeast peered with eu-west alone.
fn plan(options: PlanOptions) -> Plan {
    Plan::new(
        Deployment::new([
            region("us-east", 10, "[store]\nshards = 3\ndata_dir = \"use\"\n"),
            region("eu-west", 20, ""),
            region("ap-southeast", 30, "peers = [\"eu-west\"]\n"),
        ]),
        options,
    )
}

fn names(map: &BTreeMap<String, String>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn sharded_sites_get_shifted_ports_and_their_own_store_dirs() {
    let plan = plan(PlanOptions {
        data_dir: PathBuf::from("/d"),
        ..PlanOptions::default()
    });
    let sites: Vec<String> = plan.sites().into_iter().map(|s| s.name).collect();
    assert_eq!(
        sites,
        [
            "ap-southeast",
            "eu-west",
            "us-east_0",
            "us-east_1",
            "us-east_2"
        ]
    );
    for shard in 0..3u16 {
        let site = plan.site("us-east", u32::from(shard)).expect("site");
        let planned = plan.site_plan(&site).expect("planned");
        assert_eq!(planned.name, format!("us-east_{shard}"));
        assert_eq!(planned.core.region, planned.name, "a core is its site");
        assert_eq!(planned.gateway.region, "us-east");
        assert_eq!(planned.core_listen.port(), 7010 + shard);
        assert_eq!(planned.gateway_listen.port(), 8010 + shard);
        assert_eq!(
            plan.core_address(&site).expect("address"),
            format!("127.0.0.1:{}", 7010 + shard)
        );
        let StoreChoice::Fjall(dir) = planned.store else {
            panic!("fjall expected: {:?}", planned.store)
        };
        assert_eq!(dir, Path::new(&format!("/d/use_{shard}")));
    }
    let eu = plan.site("eu-west", 0).expect("site");
    let StoreChoice::Fjall(dir) = plan.store(&eu).expect("store") else {
        panic!("fjall expected")
    };
    assert_eq!(dir, Path::new("/d/eu-west"), "unsharded: no suffix");
    assert_eq!(plan.topology().shards_of("us-east"), 3);
    assert_eq!(plan.core_config(&eu).topology, *plan.topology());
    let error = plan.site("us-east", 3).expect_err("no such shard");
    assert!(error.to_string().contains("has 3 shard(s)"), "{error}");
}

#[test]
fn production_binds_listen_and_reaches_advertised_addresses_shifted() {
    let plan = plan(PlanOptions {
        profile: Profile::Production,
        ..PlanOptions::default()
    });
    let site = plan.site("us-east", 2).expect("site");
    let (gateway, core) = plan.binds(&site).expect("binds");
    assert_eq!(gateway.to_string(), "0.0.0.0:8012");
    assert_eq!(core.to_string(), "0.0.0.0:7012");
    assert_eq!(
        plan.core_address(&site).expect("address"),
        "core.us-east:7445"
    );
}

/// `--reach` routes this process's path to a site through an address of
/// its own choosing (the chaos suite's proxies), for its core's peers and
/// its gateway alike; the other sites stay where the files say.
#[test]
fn reach_overrides_where_a_site_is_reached() {
    let plan = plan(PlanOptions {
        reach: BTreeMap::from([("eu-west".to_string(), "127.0.0.1:9999".to_string())]),
        ..PlanOptions::default()
    });
    let site = plan.site("us-east", 1).expect("site");
    let peers = plan.peers(&site).expect("peers");
    assert_eq!(peers["eu-west"], "127.0.0.1:9999");
    assert_eq!(peers["us-east_2"], "127.0.0.1:7012");
    let ap = plan.deployment().region("ap-southeast").expect("region");
    let gateway = plan.gateway_plan(ap).expect("gateway");
    assert_eq!(gateway.cores["eu-west"], "127.0.0.1:9999");
}

#[test]
fn peers_exclude_self_and_include_the_regions_other_shards() {
    let plan = plan(PlanOptions::default());
    let site = plan.site("us-east", 1).expect("site");
    let peers = plan.peers(&site).expect("peers");
    assert_eq!(
        names(&peers),
        ["ap-southeast", "eu-west", "us-east_0", "us-east_2"]
    );
    assert_eq!(peers["us-east_2"], "127.0.0.1:7012");
    // A region that lists its peers reaches only those.
    let ap = plan.site("ap-southeast", 0).expect("site");
    assert_eq!(names(&plan.peers(&ap).expect("peers")), ["eu-west"]);
    // A gateway reaches its own region's sites and its peers'.
    let ap = plan.deployment().region("ap-southeast").expect("region");
    let gateway = plan.gateway_plan(ap).expect("gateway");
    assert_eq!(names(&gateway.cores), ["ap-southeast", "eu-west"]);
    assert_eq!(gateway.listen.port(), 8030);
    let us = plan.deployment().region("us-east").expect("region");
    let gateway = plan.gateway_plan(us).expect("gateway");
    assert_eq!(
        names(&gateway.cores),
        [
            "ap-southeast",
            "eu-west",
            "us-east_0",
            "us-east_1",
            "us-east_2"
        ]
    );
}

#[test]
fn local_kafka_takes_each_regions_brokers_from_the_options() {
    let plan = plan(PlanOptions {
        log: LogKind::Kafka,
        brokers: vec!["eu-west=eu:9092".into(), "any:9092".into()],
        ..PlanOptions::default()
    });
    let log = |name: &str| {
        let region = plan.deployment().region(name).expect("region");
        match plan.log(region).expect("log") {
            LogChoice::Kafka(config) => config,
            other => panic!("kafka expected: {other:?}"),
        }
    };
    let eu = log("eu-west");
    assert_eq!(eu.brokers, "eu:9092");
    assert_eq!(eu.replication_factor, 1, "one local broker per region");
    assert_eq!(log("us-east").brokers, "any:9092", "the catch-all");
    // Without brokers, refused with the flag to set.
    let plan = Plan::new(
        plan.deployment().clone(),
        PlanOptions {
            log: LogKind::Kafka,
            ..PlanOptions::default()
        },
    );
    let region = plan.deployment().region("eu-west").expect("region");
    let error = plan.log(region).expect_err("no brokers");
    assert!(error.to_string().contains("--log kafka needs --brokers"));
}

#[test]
fn production_takes_the_log_from_the_region_file() {
    let kafka = "[log]\nkind = \"kafka\"\nbrokers = \"file:9092\"\n\
                 partitions = 8\nreplication_factor = 3\n";
    let deployment = Deployment::new([region("us-east", 10, kafka), region("eu-west", 20, "")]);
    let options = PlanOptions {
        profile: Profile::Production,
        // Ignored by the production profile: the files say.
        log: LogKind::Kafka,
        ..PlanOptions::default()
    };
    let plan = Plan::new(deployment.clone(), options.clone());
    let us = deployment.region("us-east").expect("region");
    let LogChoice::Kafka(config) = plan.log(us).expect("log") else {
        panic!("kafka expected")
    };
    assert_eq!(
        (
            config.brokers.as_str(),
            config.partitions,
            config.replication_factor
        ),
        ("file:9092", 8, 3)
    );
    let eu = deployment.region("eu-west").expect("region");
    assert!(matches!(
        plan.log(eu).expect("log"),
        LogChoice::Embedded { partitions: 4 }
    ));
    // Brokers given in the options win over the file's.
    let plan = Plan::new(
        deployment.clone(),
        PlanOptions {
            brokers: vec!["us-east=flag:9092".into()],
            ..options
        },
    );
    let LogChoice::Kafka(config) = plan.log(us).expect("log") else {
        panic!("kafka expected")
    };
    assert_eq!(config.brokers, "flag:9092");
}

#[test]
fn default_options_keep_the_parts_defaults() {
    // The simulation plans with the defaults and must run the parts'
    // own defaults (only the topology set).
    let plan = plan(PlanOptions::default());
    let site = plan.site("eu-west", 0).expect("site");
    let mut core = CoreConfig::new("eu-west");
    core.topology = plan.topology().clone();
    assert_eq!(
        format!("{:?}", plan.core_config(&site)),
        format!("{core:?}")
    );
    let mut gateway = GatewayConfig::new("eu-west");
    gateway.topology = plan.topology().clone();
    assert_eq!(
        format!("{:?}", plan.gateway_config(site.region)),
        format!("{gateway:?}")
    );
    assert!(matches!(
        plan.log(site.region).expect("log"),
        LogChoice::Embedded { partitions: 4 }
    ));
}

#[test]
fn options_set_the_limits_and_the_clock_offset() {
    let plan = plan(PlanOptions {
        retention_secs: 7,
        sweep_secs: 0,
        media_max_mib: 0,
        send_rate: 500.0,
        registrations_per_minute: 5.0,
        max_clock_offset_ms: Some(250),
        ..PlanOptions::default()
    });
    let site = plan.site("eu-west", 0).expect("site");
    let core = plan.core_config(&site);
    assert_eq!(core.retention, Duration::from_secs(7));
    assert_eq!(core.sweep_interval, Duration::from_secs(1), "at least 1 s");
    assert_eq!(core.media.max_bytes, 1024 * 1024, "at least 1 MiB");
    assert_eq!(core.max_clock_offset, Duration::from_millis(250));
    let gateway = plan.gateway_config(site.region);
    assert_eq!(gateway.sends_per_second, 500.0);
    assert_eq!(gateway.send_burst, 500.0, "a burst is at least the rate");
    assert_eq!(gateway.registrations_per_minute, 5.0);
}

#[test]
fn the_region_files_admission_sets_the_cores_budgets() {
    let admission =
        "[admission]\nattaches_per_second = 50.0\nsync_slots = 3\nmax_waiting_syncs = 9\n";
    let plan = Plan::new(
        Deployment::new([region("x", 1, admission), region("y", 2, "")]),
        PlanOptions::default(),
    );
    let core = plan.core_config(&plan.site("x", 0).expect("site"));
    assert_eq!(
        (
            core.attaches_per_second,
            core.sync_slots,
            core.max_waiting_syncs
        ),
        (50.0, 3, 9)
    );
    let defaults = plan.core_config(&plan.site("y", 0).expect("site"));
    assert_eq!(defaults.sync_slots, CoreConfig::new("y").sync_slots);
    let zero_slots = "name = \"z\"\n[listen]\ngateway = \"0.0.0.0:1\"\ncore = \"0.0.0.0:2\"\n\
                      [advertise]\ngateway = \"a:1\"\ncore = \"a:2\"\n\
                      [local]\ngateway = \"127.0.0.1:1\"\ncore = \"127.0.0.1:2\"\n\
                      [admission]\nsync_slots = 0\n";
    let error = Deployment::parse(zero_slots).expect_err("zero slots refused");
    assert!(error.to_string().contains("sync_slots"), "{error}");
}

#[test]
fn local_buckets_are_served_here_or_reached_at_their_address() {
    let plan = plan(PlanOptions {
        data_dir: PathBuf::from("/d"),
        ..PlanOptions::default()
    });
    let buckets = plan.buckets(&["us-east".to_string()]).expect("buckets");
    let Some(BucketPlan::Embedded { listen, dir }) = buckets.get("us-east") else {
        panic!("us-east serves its bucket")
    };
    assert_eq!(listen.to_string(), "127.0.0.1:9010");
    assert_eq!(dir, Path::new("/d/use/s3"), "beside the region's store");
    let Some(BucketPlan::Remote(target)) = buckets.get("eu-west") else {
        panic!("eu-west is reached")
    };
    assert_eq!(target.endpoint.as_deref(), Some("http://127.0.0.1:9020"));
    assert_eq!(target.bucket, "media-eu-west");
    assert_eq!(
        target.credentials,
        media::S3Credentials::fixed(media::LOCAL_ACCESS_KEY_ID, media::LOCAL_SECRET_ACCESS_KEY)
    );
    assert_eq!(buckets.len(), 3);
}

#[test]
fn the_shipped_region_files_plan_three_loopback_sites() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
    let plan = Plan::new(
        Deployment::load(&dir).expect("load"),
        PlanOptions::default(),
    );
    for site in plan.sites() {
        let planned = plan.site_plan(&site).expect("planned");
        assert!(planned.core_listen.ip().is_loopback());
        assert_eq!(planned.peers.len(), 2, "{}", planned.name);
        assert!(!planned.peers.contains_key(&planned.name));
        assert!(matches!(planned.log, LogChoice::Embedded { .. }));
    }
}

#[test]
fn shifted_ports_must_exist() {
    assert_eq!(shifted("h:1", 0).expect("unshifted"), "h:1");
    assert_eq!(shifted("h:1", 2).expect("shifted"), "h:3");
    assert!(shifted("h", 1).is_err());
    assert!(shifted("h:65535", 1).is_err());
}

fn foundationdb(extra: &str) -> Plan {
    foundationdb_with(extra, PlanOptions::default())
}

fn foundationdb_with(extra: &str, options: PlanOptions) -> Plan {
    let store = format!("[store]\nengine = \"foundationdb\"\n{extra}");
    Plan::new(Deployment::new([region("us-east", 10, &store)]), options)
}

/// Every site's store is refused, naming the region and `why`.
fn every_store_refused(plan: &Plan, why: &str) {
    for site in plan.sites() {
        let error = plan.store(&site).expect_err("refused");
        assert!(
            error.to_string().contains("region us-east") && error.to_string().contains(why),
            "{error}"
        );
    }
}

#[cfg(not(feature = "fdb"))]
#[test]
fn foundationdb_needs_a_build_with_the_backend() {
    let plan = foundationdb("cluster_files = [\"a.cluster\", \"b.cluster\"]\n");
    every_store_refused(&plan, "--features fdb");
}

#[cfg(feature = "fdb")]
#[test]
fn foundationdb_takes_each_shards_cluster() {
    let plan = foundationdb("cluster_files = [\"a.cluster\", \"b.cluster\"]\n");
    let clusters: Vec<PathBuf> = plan
        .sites()
        .iter()
        .map(|site| match plan.store(site).expect("store") {
            StoreChoice::FoundationDb(file) => file,
            other => panic!("foundationdb expected: {other:?}"),
        })
        .collect();
    assert_eq!(
        clusters,
        [PathBuf::from("a.cluster"), PathBuf::from("b.cluster")]
    );
    let plan = foundationdb("");
    let site = plan.site("us-east", 0).expect("site");
    let error = plan.store(&site).expect_err("no cluster file");
    assert!(error.to_string().contains("cluster_file is required"));
}

/// `--sync <N>ms` relaxes fjall's fsync; a FoundationDB region refuses it
/// rather than start as though it applied (in either build).
#[test]
fn foundationdb_refuses_a_relaxed_fsync() {
    let plan = foundationdb_with(
        "cluster_files = [\"a.cluster\", \"b.cluster\"]\n",
        PlanOptions {
            fsync_every_ms: Some(5),
            ..PlanOptions::default()
        },
    );
    every_store_refused(&plan, "--sync 5ms");
}

#[test]
fn production_refuses_a_region_without_tls_unless_told_insecure() {
    let production = PlanOptions {
        profile: Profile::Production,
        ..PlanOptions::default()
    };
    let plan = plan(production.clone());
    let region = plan.deployment().region("eu-west").expect("region");
    let error = plan.tls(region).expect_err("no [tls] in production");
    assert!(error.to_string().contains("--insecure-core"), "{error}");
    let insecure = self::plan(PlanOptions {
        insecure_core: true,
        ..production
    });
    assert_eq!(insecure.tls(region).expect("insecure"), TlsPlan::Insecure);
    // The local profile runs every region in one process: a CA in memory.
    let local = self::plan(PlanOptions::default());
    assert_eq!(local.tls(region).expect("local"), TlsPlan::Ephemeral);
}

#[test]
fn a_region_with_tls_uses_its_files_in_every_profile() {
    let tls = "[tls]\nca = \"c/ca.pem\"\ncore_cert = \"c/a.pem\"\ncore_key = \"c/a.key\"\n\
               gateway_cert = \"c/b.pem\"\ngateway_key = \"c/b.key\"\n";
    let with_tls = Deployment::parse(&format!(
        "name = \"x\"\n[listen]\ngateway = \"0.0.0.0:1\"\ncore = \"0.0.0.0:2\"\n\
         [advertise]\ngateway = \"a:1\"\ncore = \"a:2\"\n\
         [local]\ngateway = \"127.0.0.1:1\"\ncore = \"127.0.0.1:2\"\n{tls}"
    ))
    .expect("parses");
    for profile in [Profile::Local, Profile::Production] {
        let plan = Plan::new(
            Deployment::new([with_tls.clone()]),
            PlanOptions {
                profile,
                ..PlanOptions::default()
            },
        );
        let Ok(TlsPlan::Files(files)) = plan.tls(&with_tls) else {
            panic!("{profile:?}: not the region's files");
        };
        assert_eq!(files.core_key, Path::new("c/a.key"));
    }
}
