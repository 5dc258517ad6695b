//! Hosts on one machine: a network namespace per host, each joined by a veth pair
//! to one bridge in the test's own namespace (the bridge is the "router" at `.1`).
//! Cutting a host's link is `ip link set <its veth> down`. Needs root and iproute2.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;

pub struct Lab {
    id: u16,
    hosts: Vec<String>,
}

impl Lab {
    /// Namespaces `atl<id>-<host>`; host i gets `10.213.<id % 250>.<i + 2>`.
    pub fn new(hosts: &[&str]) -> Lab {
        let out = Command::new("ip").args(["netns", "list"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "network namespaces are needed (root and iproute2): `ip netns list` said {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("network namespaces are needed: `ip` from iproute2 is missing: {e}"),
        }
        let id = (std::process::id() % 250) as u16;
        let lab = Lab {
            id,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        lab.teardown();
        let br = lab.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", lab.router()), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for (i, _) in lab.hosts.iter().enumerate() {
            let ns = lab.ns_at(i);
            let outside = lab.veth_at(i);
            let inside = format!("atl{id}p{i}");
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.ip_at(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", &lab.router()]);
            ip(&["link", "set", &outside, "master", &br]);
            ip(&["link", "set", &outside, "up"]);
        }
        lab
    }

    fn index(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host `{host}` in {:?}", self.hosts))
    }

    fn bridge(&self) -> String {
        format!("atl{}br", self.id)
    }

    fn ns_at(&self, i: usize) -> String {
        format!("atl{}-{}", self.id, self.hosts[i])
    }

    fn veth_at(&self, i: usize) -> String {
        format!("atl{}h{i}", self.id)
    }

    fn ip_at(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.id, i + 2)
    }

    /// The bridge's address, in the test's namespace: where the hosts reach it.
    pub fn router(&self) -> String {
        format!("10.213.{}.1", self.id)
    }

    pub fn ip(&self, host: &str) -> String {
        self.ip_at(self.index(host))
    }

    /// `program` run inside `host`'s namespace.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_at(self.index(host)), program]);
        c
    }

    /// Unplugs (`false`) or plugs back (`true`) the host's cable.
    pub fn set_link(&self, host: &str, up: bool) {
        ip(&[
            "link",
            "set",
            &self.veth_at(self.index(host)),
            if up { "up" } else { "down" },
        ]);
    }

    fn teardown(&self) {
        for i in 0..self.hosts.len() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns_at(i)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth_at(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Accepts on `listen_ip` (a free port) and relays each connection to `to`, so that
/// a service bound to the test's loopback (PostgreSQL, Redis, the S3 server) is
/// reachable from the hosts at the router's address. Returns the address it
/// listens on; runs until the process ends.
pub fn forward(listen_ip: &str, to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((listen_ip, 0))
        .unwrap_or_else(|e| panic!("cannot listen on {listen_ip} to forward to {to}: {e}"));
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(to) else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            relay(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            relay(outbound, inbound);
        }
    });
    addr
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
