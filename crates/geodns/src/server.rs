//! The DNS side: an authoritative server for one zone, over UDP and TCP.
//!
//! Names it answers (`<zone>` being e.g. `meridian.test.`):
//! - `<service>.<zone>` A/AAAA: the healthy gateways of the client's region
//!   ([`crate::routing`]), rotated per answer to spread connections;
//! - `_meridian._tcp.<service>.<zone>` SRV: the same gateways with their
//!   ports, targets `gw<i>.<region>.<zone>` (addresses in the additional
//!   section): for clients whose gateways are not all on one port;
//! - `gw<i>.<region>.<zone>` A/AAAA: that gateway, healthy or not;
//! - `<zone>` SOA and NS, `ns.<zone>` A/AAAA (this server).
//!
//! A query carrying an EDNS Client Subnet option (RFC 7871) is routed by
//! that subnet and answered with the option echoed, its SCOPE
//! PREFIX-LENGTH saying how far the answer holds; without one, by the
//! resolver's address. Other names in the zone are NXDOMAIN, names
//! outside it REFUSED, other opcodes NOTIMP, malformed questions FORMERR.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::health::HealthBoard;
use crate::routing::{Gateway, Routing};

/// A DNS name, as the zone and its records spell it.
pub use hickory_server::proto::rr::Name as DnsName;

/// The zone served and how long answers may be cached.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone's apex (`meridian.test.`).
    pub origin: Name,
    /// The service name clients resolve, relative to the apex (`chat`).
    pub service: String,
    /// TTL of every answer, seconds (also the SOA minimum: how long a
    /// "no such name" is cached).
    pub ttl: u32,
    /// This server's own address, for `ns.<zone>`.
    pub nameserver: Option<IpAddr>,
}

/// UDP answers stay below the size that fragments on common paths
/// (DNS flag day 2020).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The authoritative GeoDNS handler.
pub struct GeoDns {
    zone: Zone,
    origin: Name,
    service: Name,
    srv: Name,
    routing: Arc<Routing>,
    board: Arc<HealthBoard>,
    turn: AtomicUsize,
}

/// One answer before it is encoded.
#[derive(Default)]
struct Answer {
    code: Option<ResponseCode>,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
    /// The client subnet option to echo, its scope set.
    subnet: Option<ClientSubnet>,
}

/// A zone whose names cannot be formed.
#[derive(Debug, thiserror::Error)]
#[error("bad zone name: {0}")]
pub struct ZoneError(String);

impl GeoDns {
    /// Serves `zone` with the answers `routing` and `board` decide.
    ///
    /// # Errors
    /// When the zone's or service's name is not a valid DNS name.
    pub fn new(
        zone: Zone,
        routing: Arc<Routing>,
        board: Arc<HealthBoard>,
    ) -> Result<Self, ZoneError> {
        let mut origin = zone.origin.to_lowercase();
        origin.set_fqdn(true);
        let service = Name::from_ascii(&zone.service)
            .and_then(|s| s.append_domain(&origin))
            .map_err(|e| ZoneError(format!("{}: {e}", zone.service)))?
            .to_lowercase();
        let srv = Name::from_ascii("_meridian._tcp")
            .and_then(|s| s.append_domain(&service))
            .map_err(|e| ZoneError(e.to_string()))?;
        Ok(Self {
            zone,
            origin,
            service,
            srv,
            routing,
            board,
            turn: AtomicUsize::new(0),
        })
    }

    /// The name clients resolve (`chat.meridian.test.`).
    pub fn service_name(&self) -> &Name {
        &self.service
    }

    fn record(&self, name: &Name, rdata: RData) -> Record {
        Record::from_rdata(name.clone(), self.zone.ttl, rdata)
    }

    fn soa(&self) -> Record {
        let mname = self.ns_name();
        let rname = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone());
        self.record(
            &self.origin,
            RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86_400, self.zone.ttl)),
        )
    }

    fn ns_name(&self) -> Name {
        Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone())
    }

    /// `gw<i>.<region>.<zone>`.
    fn gateway_name(&self, region: &str, index: usize) -> Option<Name> {
        Name::from_ascii(format!("gw{}.{region}", index + 1))
            .and_then(|n| n.append_domain(&self.origin))
            .ok()
    }

    /// The A or AAAA record of `ip` under `name`, when it is of `qtype`'s
    /// family.
    fn address(&self, name: &Name, ip: IpAddr, qtype: RecordType) -> Option<Record> {
        match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A) => Some(self.record(name, RData::A(A(v4)))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(self.record(name, RData::AAAA(AAAA(v6)))),
            _ => None,
        }
    }

    /// The gateway `gw<i>.<region>` names.
    fn named_gateway(&self, name: &Name) -> Option<&Gateway> {
        self.routing.regions().iter().find_map(|region| {
            region
                .gateways
                .iter()
                .enumerate()
                .find(|(i, _)| self.gateway_name(&region.name, *i).as_ref() == Some(name))
                .map(|(_, g)| g)
        })
    }

    /// The answer to one question from `resolver`.
    fn answer(
        &self,
        name: &Name,
        qtype: RecordType,
        resolver: IpAddr,
        subnet: Option<&ClientSubnet>,
    ) -> Answer {
        let mut answer = Answer::default();
        if !self.origin.zone_of(name) {
            answer.code = Some(ResponseCode::Refused);
            return answer;
        }
        // The client's subnet, unless it asked not to be located (source
        // prefix 0); echoed either way.
        let client = subnet
            .filter(|s| s.source_prefix() > 0)
            .map(|s| (s.addr(), s.source_prefix()));
        if *name == self.service || *name == self.srv {
            let choice = self
                .routing
                .choose(client, resolver, |g| self.board.is_healthy(g));
            metrics::counter!(
                "meridian_geodns_answers_total",
                "region" => choice.region.clone(),
                "via" => choice.via.label(),
                "failed_over" => if choice.region == choice.preferred { "false" } else { "true" },
            )
            .increment(1);
            if choice.fail_open {
                metrics::counter!("meridian_geodns_fail_open_total").increment(1);
            }
            answer.subnet = subnet.map(|s| {
                let scope = if client.is_some() {
                    choice.scope_prefix
                } else {
                    0
                };
                ClientSubnet::new(s.addr(), s.source_prefix(), scope)
            });
            let mut gateways = choice.gateways.clone();
            if !gateways.is_empty() {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed) % gateways.len();
                gateways.rotate_left(turn);
            }
            if *name == self.service {
                answer.answers = gateways
                    .iter()
                    .filter_map(|g| self.address(name, g.addr.ip(), qtype))
                    .collect();
            } else if qtype == RecordType::SRV {
                let region = self
                    .routing
                    .regions()
                    .iter()
                    .find(|r| r.name == choice.region);
                for gateway in &gateways {
                    let index = region
                        .and_then(|r| r.gateways.iter().position(|g| g == gateway))
                        .unwrap_or(0);
                    let Some(target) = self.gateway_name(&choice.region, index) else {
                        continue;
                    };
                    answer.answers.push(self.record(
                        name,
                        RData::SRV(SRV::new(0, 1, gateway.addr.port(), target.clone())),
                    ));
                    for family in [RecordType::A, RecordType::AAAA] {
                        answer
                            .additionals
                            .extend(self.address(&target, gateway.addr.ip(), family));
                    }
                }
            }
        } else if *name == self.origin {
            match qtype {
                RecordType::SOA => answer.answers.push(self.soa()),
                RecordType::NS => {
                    let ns = self.ns_name();
                    answer
                        .answers
                        .push(self.record(name, RData::NS(NS(ns.clone()))));
                    if let Some(ip) = self.zone.nameserver {
                        for family in [RecordType::A, RecordType::AAAA] {
                            answer.additionals.extend(self.address(&ns, ip, family));
                        }
                    }
                }
                _ => {}
            }
        } else if *name == self.ns_name() && self.zone.nameserver.is_some() {
            if let Some(ip) = self.zone.nameserver {
                answer.answers.extend(self.address(name, ip, qtype));
            }
        } else if let Some(gateway) = self.named_gateway(name) {
            answer
                .answers
                .extend(self.address(name, gateway.addr.ip(), qtype));
        } else {
            answer.code = Some(ResponseCode::NXDomain);
        }
        // No data (or no such name): the SOA says for how long.
        if answer.answers.is_empty() {
            answer.authority.push(self.soa());
        }
        answer
    }
}

#[async_trait::async_trait]
impl RequestHandler for GeoDns {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let refuse = |code: ResponseCode| {
            metrics::counter!("meridian_geodns_errors_total", "code" => code.to_str()).increment(1);
            code
        };
        let code = if request.message_type() != MessageType::Query {
            Some(refuse(ResponseCode::FormErr))
        } else if request.op_code() != OpCode::Query {
            Some(refuse(ResponseCode::NotImp))
        } else if request.queries().len() != 1 {
            Some(refuse(ResponseCode::FormErr))
        } else {
            None
        };
        let sent = match (code, request.queries().first()) {
            (None, Some(query)) => {
                let name = Name::from(query.name().clone());
                let subnet =
                    request
                        .edns()
                        .and_then(|edns| match edns.options().get(EdnsCode::Subnet) {
                            Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
                            _ => None,
                        });
                let answer = self.answer(
                    &name,
                    query.query_type(),
                    request.src().ip(),
                    subnet.as_ref(),
                );
                if let Some(code) = answer.code {
                    header.set_response_code(refuse(code));
                }
                let mut builder = builder;
                if request.edns().is_some() {
                    let mut edns = Edns::new();
                    edns.set_max_payload(MAX_UDP_PAYLOAD);
                    if let Some(subnet) = answer.subnet {
                        edns.options_mut().insert(EdnsOption::Subnet(subnet));
                    }
                    builder.edns(edns);
                }
                let response = builder.build(
                    header,
                    answer.answers.iter(),
                    answer.authority.iter(),
                    std::iter::empty(),
                    answer.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            (code, _) => {
                let code = code.unwrap_or(ResponseCode::FormErr);
                response_handle
                    .send_response(builder.error_msg(request.header(), code))
                    .await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "could not send a DNS answer");
                let mut failed = header;
                failed.set_response_code(ResponseCode::ServFail);
                failed.into()
            }
        }
    }
}
