//! The DNS server: UDP and TCP on each listen address, answers from [`Records`] for the
//! cluster domain and known reverse names, forwarding for everything else.
//!
//! Answers from the store are computed inline on the receiving task (no upstream is
//! involved); each forwarded query runs on a task of its own, so a slow upstream never holds
//! up other queries. UDP answers larger than the client's size (512, or its EDNS size) lose
//! the additional section, then trailing answers, and carry TC. TCP connections may pipeline
//! queries; answers go back as they are ready (RFC 7766).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

use crate::forward;
use crate::records::{Lookup, Qtype, Rdata, Records, normalize};

/// TTL of in-cluster records (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;
/// The UDP payload size kubox advertises in EDNS answers (the DNS flag day value).
const EDNS_SIZE: u16 = 1232;
/// Forwarded queries in flight at once; more are dropped (the client retries).
const MAX_FORWARDS: usize = 1024;
/// A TCP connection with no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How a query arrived: its answer's size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with one query.
pub enum Plan {
    /// The answer, encoded.
    Done(Vec<u8>),
    /// Forward the raw query; the answer must fit in `limit` bytes.
    Forward { query: Vec<u8>, limit: usize },
    /// The answer so far ends in a CNAME out of the cluster: ask upstream for the target.
    Chase {
        response: Box<Message>,
        target: Name,
        qtype: RecordType,
        limit: usize,
    },
}

/// Answers queries; shared by every listener.
pub struct Handler {
    records: Arc<Records>,
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
    forwards: Arc<Semaphore>,
    soa: Record,
}

impl Handler {
    pub fn new(records: Arc<Records>, upstreams: Vec<SocketAddr>) -> Self {
        let domain = records.domain().to_string();
        let name = |s: &str| Name::from_ascii(format!("{s}.")).unwrap_or_else(|_| Name::root());
        let soa = Record::from_rdata(
            name(&domain),
            TTL,
            RData::SOA(SOA::new(
                name(&format!("ns.dns.{domain}")),
                name(&format!("hostmaster.{domain}")),
                1,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        Handler {
            records,
            upstreams,
            next: AtomicUsize::new(0),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            soa,
        }
    }

    /// Decides what to do with the raw query `bytes`; None drops it (not a query at all).
    pub fn plan(&self, bytes: &[u8], transport: Transport) -> Option<Plan> {
        let req = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                // A header we can read: FORMERR; anything less is noise.
                if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
                    return None;
                }
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return m.to_vec().ok().map(Plan::Done);
            }
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(req.max_payload()),
        };
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.add_queries(req.queries.iter().cloned());
        if req.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_SIZE);
            resp.set_edns(edns);
        }
        let reply = |mut resp: Message, code: ResponseCode| {
            resp.metadata.response_code = code;
            Some(Plan::Done(encode_within(&mut resp, limit)))
        };
        if req.metadata.op_code != OpCode::Query {
            return reply(resp, ResponseCode::NotImp);
        }
        let [q] = &req.queries[..] else {
            return reply(resp, ResponseCode::FormErr);
        };
        let qname = normalize(&q.name().to_ascii());
        let qtype = q.query_type();
        let lookup = if qname == self.records.domain() && qtype == RecordType::SOA {
            resp.metadata.authoritative = true;
            resp.add_answer(self.soa.clone());
            return reply(resp, ResponseCode::NoError);
        } else {
            self.records.lookup(&qname, qtype_of(qtype))
        };
        match lookup {
            Lookup::NotOurs => Some(Plan::Forward {
                query: bytes.to_vec(),
                limit,
            }),
            Lookup::NxDomain => {
                resp.metadata.authoritative = true;
                resp.add_authority(self.soa.clone());
                reply(resp, ResponseCode::NXDomain)
            }
            Lookup::NoData => {
                resp.metadata.authoritative = true;
                resp.add_authority(self.soa.clone());
                reply(resp, ResponseCode::NoError)
            }
            Lookup::Found { records, external } => {
                resp.metadata.authoritative = true;
                for (owner, rdata) in &records {
                    let name = if *owner == qname {
                        q.name().clone()
                    } else {
                        fqdn(owner)
                    };
                    resp.add_answer(Record::from_rdata(name, TTL, rdata_of(rdata)));
                    if let Rdata::Srv { target, .. } = rdata {
                        for a in self.records.addresses(target) {
                            resp.add_additional(Record::from_rdata(
                                fqdn(target),
                                TTL,
                                rdata_of(&a),
                            ));
                        }
                    }
                }
                match external {
                    Some(target) => Some(Plan::Chase {
                        response: Box::new(resp),
                        target: fqdn(&target),
                        qtype,
                        limit,
                    }),
                    None => reply(resp, ResponseCode::NoError),
                }
            }
        }
    }

    /// Carries out a plan that needs an upstream.
    pub async fn finish(&self, plan: Plan) -> Option<Vec<u8>> {
        if let Plan::Done(b) = plan {
            return Some(b);
        }
        let _permit = self.forwards.clone().try_acquire_owned().ok()?;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        match plan {
            Plan::Done(b) => Some(b),
            Plan::Forward { query, limit } => {
                let answer = forward::forward(&self.upstreams, start, &query).await;
                match answer {
                    Some(a) if a.len() <= limit => Some(a),
                    Some(a) => {
                        let mut m = Message::from_vec(&a).ok()?;
                        Some(encode_within(&mut m, limit))
                    }
                    None => {
                        let mut m = Message::from_vec(&query).ok()?;
                        m.metadata.message_type = MessageType::Response;
                        m.metadata.recursion_available = true;
                        m.metadata.response_code = ResponseCode::ServFail;
                        m.answers.clear();
                        m.authorities.clear();
                        m.additionals.clear();
                        Some(encode_within(&mut m, limit))
                    }
                }
            }
            Plan::Chase {
                mut response,
                target,
                qtype,
                limit,
            } => {
                // As CoreDNS: the CNAME to a name outside the cluster, followed by whatever
                // upstream says of the target (only the CNAME when it says nothing).
                let mut q = Message::query();
                q.metadata.recursion_desired = true;
                q.add_query(Query::query(target, qtype));
                if let Ok(b) = q.to_vec()
                    && let Some(a) = forward::forward(&self.upstreams, start, &b).await
                    && let Ok(m) = Message::from_vec(&a)
                {
                    response.add_answers(m.answers);
                }
                response.metadata.response_code = ResponseCode::NoError;
                Some(encode_within(&mut response, limit))
            }
        }
    }
}

fn qtype_of(t: RecordType) -> Qtype {
    match t {
        RecordType::A => Qtype::A,
        RecordType::AAAA => Qtype::Aaaa,
        RecordType::CNAME => Qtype::Cname,
        RecordType::SRV => Qtype::Srv,
        RecordType::PTR => Qtype::Ptr,
        RecordType::ANY => Qtype::Any,
        _ => Qtype::Other,
    }
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}

fn rdata_of(r: &Rdata) -> RData {
    match r {
        Rdata::A(ip) => RData::A(A(*ip)),
        Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rdata::Cname(t) => RData::CNAME(CNAME(fqdn(t))),
        Rdata::Ptr(t) => RData::PTR(PTR(fqdn(t))),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target))),
    }
}

/// Encodes `m` in at most `limit` bytes: drops the additional section first, then trailing
/// answers and authority records with TC set (RFC 2181 9).
pub fn encode_within(m: &mut Message, limit: usize) -> Vec<u8> {
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    if let Some(b) = fits(m) {
        return b;
    }
    m.additionals.clear();
    if let Some(b) = fits(m) {
        return b;
    }
    m.metadata.truncation = true;
    m.authorities.clear();
    while !m.answers.is_empty() {
        m.answers.pop();
        if let Some(b) = fits(m) {
            return b;
        }
    }
    m.edns = None;
    m.to_vec().unwrap_or_default()
}

/// The sockets of a DNS server, bound.
pub struct Listeners {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP on every address (port 0: one free port, the same for both).
    pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Self> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            let mut attempt = 0;
            loop {
                let u = UdpSocket::bind(addr).await?;
                let bound = u.local_addr()?;
                match TcpListener::bind(bound).await {
                    Ok(t) => {
                        udp.push(Arc::new(u));
                        tcp.push(t);
                        break;
                    }
                    // Another program holds the TCP side of the picked port: pick again.
                    Err(_) if addr.port() == 0 && attempt < 10 => attempt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Listeners { udp, tcp })
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|u| u.local_addr().ok())
            .collect()
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listeners: Listeners,
    handler: Arc<Handler>,
    shutdown: impl Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for sock in listeners.udp {
        tasks.spawn(serve_udp(sock, handler.clone()));
    }
    for l in listeners.tcp {
        tasks.spawn(serve_tcp(l, handler.clone()));
    }
    shutdown.await;
    tasks.abort_all();
}

async fn serve_udp(sock: Arc<UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        match handler.plan(&buf[..n], Transport::Udp) {
            None => {}
            Some(Plan::Done(answer)) => {
                let _ = sock.send_to(&answer, peer).await;
            }
            Some(plan) => {
                let (sock, handler) = (sock.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Some(answer) = handler.finish(plan).await {
                        let _ = sock.send_to(&answer, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(tcp_connection(stream, handler.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_connection(stream: TcpStream, handler: Arc<Handler>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if wr.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, rd.read_u16()).await else {
            break;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        let open = match handler.plan(&buf, Transport::Tcp) {
            None => true,
            Some(Plan::Done(answer)) => tx.send(answer).await.is_ok(),
            Some(plan) => {
                let (tx, handler) = (tx.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Some(answer) = handler.finish(plan).await {
                        let _ = tx.send(answer).await;
                    }
                });
                true
            }
        };
        if !open {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::{headless, service, web};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    /// A server on a free loopback port with `records` and `upstreams`.
    async fn start(records: Records, upstreams: Vec<SocketAddr>) -> SocketAddr {
        let listeners = Listeners::bind(&[(Ipv4Addr::LOCALHOST, 0).into()])
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listeners.local_addrs()[0];
        let handler = Arc::new(Handler::new(Arc::new(records), upstreams));
        tokio::spawn(serve(listeners, handler, std::future::pending()));
        addr
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap_or_default(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m
    }

    async fn udp(server: SocketAddr, m: &Message) -> (Message, usize) {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sock.send_to(&m.to_vec().unwrap_or_default(), server)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(8), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer"))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = Message::from_vec(&buf[..n]).unwrap_or_else(|e| panic!("bad answer: {e}"));
        assert_eq!(resp.metadata.id, m.metadata.id);
        (resp, n)
    }

    async fn tcp(server: SocketAddr, msgs: &[Message]) -> Vec<Message> {
        let mut s = TcpStream::connect(server)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for m in msgs {
            let b = m.to_vec().unwrap_or_default();
            let mut framed = (b.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&b);
            s.write_all(&framed).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let mut out = Vec::new();
        for _ in msgs {
            let n = s.read_u16().await.unwrap_or_else(|e| panic!("{e}"));
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            out.push(Message::from_vec(&buf).unwrap_or_else(|e| panic!("{e}")));
        }
        out
    }

    fn ips(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    fn store() -> Records {
        let r = Records::new("cluster.local");
        r.apply_service(&web());
        let (svc, sl) = headless(3);
        r.apply_service(&svc);
        r.apply_slice(&sl);
        r
    }

    #[tokio::test]
    async fn answers_in_cluster_names_over_udp_and_tcp() {
        let server = start(store(), vec![]).await;
        let (m, _) = udp(
            server,
            &query("web.default.svc.cluster.local.", RecordType::A, None),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(ips(&m), vec![IpAddr::from([10, 43, 0, 20])]);
        assert_eq!(m.answers[0].ttl, TTL);
        assert_eq!(
            m.answers[0].name.to_ascii(),
            "web.default.svc.cluster.local."
        );

        // NXDOMAIN and NODATA carry the zone's SOA.
        let (m, _) = udp(
            server,
            &query("nope.default.svc.cluster.local.", RecordType::A, None),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
        assert!(matches!(
            m.authorities.first().map(|r| &r.data),
            Some(RData::SOA(_))
        ));
        let (m, _) = udp(
            server,
            &query("web.default.svc.cluster.local.", RecordType::AAAA, None),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert!(matches!(
            m.authorities.first().map(|r| &r.data),
            Some(RData::SOA(_))
        ));

        // SRV with the targets' addresses in the additional section; PTR.
        let (m, _) = udp(
            server,
            &query(
                "_pg._tcp.db.data.svc.cluster.local.",
                RecordType::SRV,
                Some(1232),
            ),
        )
        .await;
        assert_eq!(m.answers.len(), 3);
        assert!(
            m.answers
                .iter()
                .all(|r| matches!(&r.data, RData::SRV(s) if s.port == 5432))
        );
        assert_eq!(m.additionals.len(), 3, "{m:?}");
        let (m, _) = udp(
            server,
            &query("20.0.43.10.in-addr.arpa.", RecordType::PTR, None),
        )
        .await;
        assert!(
            matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.cluster.local.")
        );

        // TCP, two pipelined queries on one connection.
        let answers = tcp(
            server,
            &[
                query("db.data.svc.cluster.local.", RecordType::A, None),
                query("10-1-2-3.x.pod.cluster.local.", RecordType::A, None),
            ],
        )
        .await;
        let mut all: Vec<IpAddr> = answers.iter().flat_map(ips).collect();
        all.sort();
        assert_eq!(
            all,
            ["10.1.2.3", "10.42.0.10", "10.42.0.11", "10.42.0.12"].map(|s| s
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
        );
    }

    #[tokio::test]
    async fn large_udp_answers_are_truncated_to_the_clients_size() {
        let r = Records::new("cluster.local");
        let (svc, sl) = headless(120);
        r.apply_service(&svc);
        r.apply_slice(&sl);
        let server = start(r, vec![]).await;
        let name = "db.data.svc.cluster.local.";
        let (m, n) = udp(server, &query(name, RecordType::A, None)).await;
        assert!(m.metadata.truncation, "TC set");
        assert!(n <= 512, "{n} bytes");
        assert!(!m.answers.is_empty() && m.answers.len() < 120);
        let (m, n) = udp(server, &query(name, RecordType::A, Some(1232))).await;
        assert!(m.metadata.truncation && n <= 1232 && n > 512, "{n}");
        let (m, _) = udp(server, &query(name, RecordType::A, Some(4096))).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 120);
        assert!(m.edns.is_some(), "EDNS answered with EDNS");
        let m = &tcp(server, &[query(name, RecordType::A, None)]).await[0];
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 120);
    }

    /// How a fake upstream behaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Fake {
        /// Answers A 192.0.2.1 for any name.
        Answer,
        /// Never answers.
        Silent,
        /// Answers UDP with TC and no records; TCP with 40 records.
        Truncating,
    }

    /// A fake upstream on loopback (UDP, and TCP on the same port).
    async fn upstream(kind: Fake) -> SocketAddr {
        let l = Listeners::bind(&[(Ipv4Addr::LOCALHOST, 0).into()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addrs()[0];
        let Listeners { mut udp, mut tcp } = l;
        let (sock, listener) = (udp.remove(0), tcp.remove(0));
        let answer = move |q: &[u8], over_tcp: bool| -> Option<Vec<u8>> {
            let q = Message::from_vec(q).ok()?;
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.recursion_available = true;
            m.add_queries(q.queries.clone());
            let name = q.queries[0].name().clone();
            let count = match kind {
                Fake::Truncating if !over_tcp => {
                    m.metadata.truncation = true;
                    0
                }
                Fake::Truncating => 40,
                _ => 1,
            };
            for i in 0..count {
                m.add_answer(Record::from_rdata(
                    name.clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1 + i))),
                ));
            }
            m.to_vec().ok()
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                if kind == Fake::Silent {
                    continue;
                }
                if let Some(a) = answer(&buf[..n], false) {
                    let _ = sock.send_to(&a, peer).await;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let Ok(n) = s.read_u16().await else { continue };
                let mut buf = vec![0u8; usize::from(n)];
                if s.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                if let Some(a) = answer(&buf, true) {
                    let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&a);
                    let _ = s.write_all(&framed).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn other_names_are_forwarded_with_tcp_retry_and_next_upstream() {
        let silent = upstream(Fake::Silent).await;
        let good = upstream(Fake::Answer).await;
        let trunc = upstream(Fake::Truncating).await;

        // A silent upstream times out; the next one answers.
        let server = start(store(), vec![silent, good]).await;
        let (m, _) = udp(server, &query("example.com.", RecordType::A, None)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(ips(&m), vec![IpAddr::from([192, 0, 2, 1])]);
        assert!(!m.metadata.authoritative);
        // Unknown reverse names fall through to upstream too.
        let (m, _) = udp(
            server,
            &query("1.0.0.127.in-addr.arpa.", RecordType::PTR, None),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);

        // A slow upstream does not hold up other queries.
        let slow = start(store(), vec![silent]).await;
        let pending =
            tokio::spawn(
                async move { udp(slow, &query("example.org.", RecordType::A, None)).await },
            );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let (m, _) = udp(
            slow,
            &query("web.default.svc.cluster.local.", RecordType::A, None),
        )
        .await;
        assert_eq!(ips(&m), vec![IpAddr::from([10, 43, 0, 20])]);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let (m, _) = pending.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "no upstream answered"
        );

        // A truncated upstream answer is fetched again over TCP, then truncated to the
        // client's size (UDP) or given whole (TCP, EDNS).
        let server = start(store(), vec![trunc]).await;
        let (m, n) = udp(server, &query("many.example.", RecordType::A, None)).await;
        assert!(
            m.metadata.truncation && n <= 512 && !m.answers.is_empty(),
            "{n} {m:?}"
        );
        let (m, _) = udp(server, &query("many.example.", RecordType::A, Some(4096))).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 40);
        let m = &tcp(server, &[query("many.example.", RecordType::A, None)]).await[0];
        assert_eq!(m.answers.len(), 40);

        // An ExternalName out of the cluster: the CNAME, then what upstream says of the target.
        let r = store();
        r.apply_service(&service(
            serde_json::json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.net"}}),
        ));
        let server = start(r, vec![good]).await;
        let (m, _) = udp(
            server,
            &query("ext.default.svc.cluster.local.", RecordType::A, None),
        )
        .await;
        assert!(
            matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.net."),
            "{m:?}"
        );
        assert_eq!(ips(&m), vec![IpAddr::from([192, 0, 2, 1])]);
        assert_eq!(m.answers[1].name.to_ascii(), "example.net.");
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\nnameserver 2001:db8::53\noptions ndots:2\nnameserver 10.0.0.2\n";
        assert_eq!(
            crate::upstreams_from_resolv_conf(text),
            vec![
                "10.0.0.2:53"
                    .parse::<SocketAddr>()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                "[2001:db8::53]:53"
                    .parse::<SocketAddr>()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            ]
        );
    }
}
