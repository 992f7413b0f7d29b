//! `meridian chat`: a command-line client on the SDK.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use meridian_sdk::{Client, Discovery, Rest, TlsRoots};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Gateway base URL (`http://` or `https://`); with `--dns`, only its
    /// scheme is used.
    #[arg(long, default_value = "http://127.0.1.1:8010", env = "MERIDIAN_URL")]
    url: String,
    /// Find gateways through this DNS server (GeoDNS, `meridian dev`'s is
    /// 127.0.0.1:8053) by `--service`, and follow its answers on reconnect.
    #[arg(long, env = "MERIDIAN_DNS")]
    dns: Option<std::net::SocketAddr>,
    /// The service name resolved with `--dns`.
    #[arg(long, default_value = "chat.meridian.test", env = "MERIDIAN_SERVICE")]
    service: String,
    /// With `--dns`, asks from this address of the host: GeoDNS locates a
    /// client by its resolver's address when no client subnet comes with
    /// the question, so locally 127.1.0.1, 127.2.0.1 or 127.3.0.1 stand
    /// for a client in us-east, eu-west or ap-southeast (the shipped
    /// region files' loopback `client_prefixes`).
    #[arg(long, requires = "dns")]
    dns_source: Option<std::net::IpAddr>,
    /// A CA certificate (PEM) to trust for `https` besides the system's:
    /// a deployment's own (`regions/certs/ca.pem` for a local run).
    #[arg(long, env = "MERIDIAN_CA")]
    ca: Option<std::path::PathBuf>,
    /// Device token (from `register`).
    #[arg(long, env = "MERIDIAN_TOKEN", default_value = "")]
    token: String,
    #[command(subcommand)]
    command: ChatCommand,
}

#[derive(Subcommand)]
enum ChatCommand {
    /// Registers a user; prints its id and device token.
    Register {
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Opens (or creates) the direct chat with a user; prints its id.
    Direct {
        /// The other user's id.
        #[arg(long)]
        peer: String,
    },
    /// Creates a group; prints its id.
    Group {
        /// Group name.
        #[arg(long)]
        name: String,
        /// Member user ids.
        #[arg(long, num_args = 0..)]
        members: Vec<String>,
    },
    /// Sends a message.
    Send {
        /// Conversation id.
        #[arg(long)]
        conv: String,
        /// Text.
        #[arg(long)]
        text: String,
    },
    /// Prints messages as they arrive (Ctrl-C to stop).
    Tail,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let rest = match &args.ca {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Rest::with_roots(&args.url, TlsRoots::with_pem(&pem)?)
        }
        None => Rest::new(&args.url),
    };
    // With DNS, the first gateway answered serves the REST calls, and the
    // client asks again whenever it reconnects.
    let discovery = match args.dns {
        Some(dns) => {
            let discovery = Discovery::new(dns, &args.service, &rest)?;
            Some(match args.dns_source {
                Some(source) => discovery.from_source(source),
                None => discovery,
            })
        }
        None => None,
    };
    let rest = match &discovery {
        Some(discovery) => discovery
            .gateways(false)
            .await?
            .into_iter()
            .next()
            .context("no gateway answered")?,
        None => rest,
    };
    let client = |seed: u64| {
        let client = Client::new(&rest, &args.token, seed);
        match &discovery {
            Some(discovery) => client.with_discovery(discovery.clone()),
            None => client,
        }
    };
    match args.command {
        ChatCommand::Register { name } => {
            let user = rest.register(&name).await?;
            println!("user_id  {}", user.user_id);
            println!("device   {}", user.device_id);
            println!("token    {}", user.token);
            println!("export MERIDIAN_TOKEN={}", user.token);
        }
        ChatCommand::Direct { peer } => {
            let conv = rest.with_token(&args.token).direct(&peer).await?;
            println!("{}", conv.conv_id);
        }
        ChatCommand::Group { name, members } => {
            let conv = rest
                .with_token(&args.token)
                .create_group(&name, &members)
                .await?;
            println!("{}", conv.conv_id);
        }
        ChatCommand::Send { conv, text } => {
            let mut client = client(seed()?);
            let id = client.new_client_msg_id();
            let sent = client.send(&conv, &id, &text, None).await?;
            println!("sent {} hlc {}", sent.msg_id, sent.hlc);
        }
        ChatCommand::Tail => {
            let mut client = client(seed()?);
            client.connect(10).await?;
            loop {
                for message in client.poll(Duration::from_secs(1)).await? {
                    println!(
                        "[{}] {}: {}",
                        message.conv_id, message.sender_user_id, message.payload
                    );
                }
            }
        }
    }
    Ok(())
}

/// A seed for `client_msg_id`s: from the OS, so two runs never reuse a key.
fn seed() -> anyhow::Result<u64> {
    Ok(meridian_seams::Rng::from_os()?.next_u64())
}
