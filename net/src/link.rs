//! Links, addresses and routes through rtnetlink. A netlink socket works in the network
//! namespace of the thread that opened it, so every batch of requests runs on a thread of
//! its own that first joins the namespace it is meant for (setns(2) affects one thread).

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::Error;

/// Marks the routes we own (to other nodes' pod CIDRs), so a sync can tell them from the
/// routes of anyone else. An unassigned number in rtnetlink(7)'s `rtm_protocol` space.
const ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Other(191);

/// Runs `f` with a netlink handle in the network namespace at `netns` (the calling
/// thread's own when `None`).
pub(crate) fn in_netns<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>>,
{
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(path) = &netns {
            let file = File::open(path).map_err(Error::io(format!("open netns {}", path.display())))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Io { context: format!("enter netns {}", path.display()), error: e.into() })?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(Error::io("start netlink runtime"))?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::io("open netlink socket"))?;
            tokio::spawn(connection);
            f(handle).await
        })
    })
    .join()
    .unwrap_or_else(|_| Err(Error::Netlink { context: "netlink thread".into(), message: "panicked".into() }))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

fn netlink(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let context = context.into();
    move |e| {
        let message = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        Error::Netlink { context, message }
    }
}

/// What we need to know of a link.
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub controller: Option<u32>,
    pub is_bridge: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let mut link =
            Link { index: message.header.index, name: String::new(), mtu: 0, controller: None, is_bridge: false };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.is_bridge |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)))
                }
                _ => {}
            }
        }
        link
    }
}

pub(crate) async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>, Error> {
    match handle.link().get().match_name(name).execute().try_next().await {
        Ok(message) => Ok(message.as_ref().map(Link::from_message)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("look up link {name}"))(e)),
    }
}

pub(crate) async fn links(handle: &Handle) -> Result<Vec<Link>, Error> {
    let mut stream = handle.link().get().execute();
    let mut links = Vec::new();
    while let Some(message) = stream.try_next().await.map_err(netlink("list links"))? {
        links.push(Link::from_message(&message));
    }
    Ok(links)
}

/// The bridge `name`, made (up, with `gateway` on it) if it is not there. Returns it and
/// whether it was made now.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Net,
    mtu: Option<u32>,
) -> Result<(Link, bool), Error> {
    let created = match link_by_name(handle, name).await? {
        Some(link) if !link.is_bridge => {
            return Err(Error::Invalid(format!("link {name} exists and is not a bridge")));
        }
        Some(_) => false,
        None => match handle.link().add(LinkBridge::new(name).build()).execute().await {
            Ok(()) => true,
            Err(e) if errno(&e) == Some(libc::EEXIST) => false,
            Err(e) => return Err(netlink(format!("create bridge {name}"))(e)),
        },
    };
    let link = link_by_name(handle, name).await?.ok_or_else(|| Error::Invalid(format!("bridge {name} vanished")))?;
    if created || mtu.is_some_and(|m| m != link.mtu) {
        // Set through RTM_SETLINK so the bridge keeps this MTU rather than following its ports.
        let mut request = LinkUnspec::new_with_index(link.index).up();
        if let Some(mtu) = mtu {
            request = request.mtu(mtu);
        }
        handle.link().set(request.build()).execute().await.map_err(netlink(format!("set up bridge {name}")))?;
    }
    match handle.address().add(link.index, IpAddr::V4(gateway.addr()), gateway.prefix_len()).execute().await {
        Err(e) if errno(&e) != Some(libc::EEXIST) => return Err(netlink(format!("address {gateway} on {name}"))(e)),
        _ => {}
    }
    let link = link_by_name(handle, name).await?.ok_or_else(|| Error::Invalid(format!("bridge {name} vanished")))?;
    Ok((link, created))
}

/// A veth pair: `host_name` on `bridge` (hairpin on, so a pod can reach itself through a
/// service) and up, its peer made directly inside the namespace at `netns` as `eth0` (the
/// kernel refuses to bring a peer up as it is moved: ENOTCONN; `configure_pod_side` does).
pub(crate) async fn add_veth(handle: &Handle, host_name: &str, bridge: &Link, netns: &File) -> Result<(), Error> {
    let peer = LinkUnspec::new_with_name("eth0").mtu(bridge.mtu).setns_by_fd(netns.as_raw_fd()).build();
    let veth = LinkVeth::new(host_name, "eth0")
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(bridge.mtu)
        .controller(bridge.index)
        .up()
        .build();
    handle.link().add(veth).execute().await.map_err(netlink(format!("create veth {host_name}")))?;
    let host =
        link_by_name(handle, host_name).await?.ok_or_else(|| Error::Invalid(format!("veth {host_name} vanished")))?;
    handle
        .link()
        .set_port(LinkBridgePort::new(host.index).hairpin(true).build())
        .execute()
        .await
        .map_err(netlink(format!("hairpin on {host_name}")))
}

/// Deletes the link `name` if it exists.
pub(crate) async fn delete_link(handle: &Handle, name: &str) -> Result<(), Error> {
    let Some(link) = link_by_name(handle, name).await? else { return Ok(()) };
    match handle.link().del(link.index).execute().await {
        Err(e) if errno(&e) != Some(libc::ENODEV) => Err(netlink(format!("delete link {name}"))(e)),
        _ => Ok(()),
    }
}

/// Inside a pod's namespace: `address` on eth0 and the default route via `gateway`.
pub(crate) async fn configure_pod_side(handle: &Handle, address: Ipv4Net, gateway: Ipv4Addr) -> Result<(), Error> {
    let eth0 = link_by_name(handle, "eth0").await?.ok_or_else(|| Error::Invalid("eth0 missing in the pod".into()))?;
    handle
        .address()
        .add(eth0.index, IpAddr::V4(address.addr()), address.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(netlink(format!("address {address} on eth0")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(eth0.index).up().build())
        .execute()
        .await
        .map_err(netlink("set eth0 up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(eth0.index).build();
    handle.route().add(route).replace().execute().await.map_err(netlink(format!("default route via {gateway}")))
}

/// Our routes (to other nodes' pod CIDRs): destination and gateway.
pub(crate) async fn owned_routes(handle: &Handle) -> Result<Vec<(Ipv4Net, Ipv4Addr, RouteMessage)>, Error> {
    let filter = RouteMessageBuilder::<Ipv4Addr>::new().protocol(ROUTE_PROTOCOL).build();
    let mut stream = handle.route().get(filter).execute();
    let mut routes = Vec::new();
    while let Some(route) = stream.try_next().await.map_err(netlink("list routes"))? {
        if route.header.protocol != ROUTE_PROTOCOL {
            continue;
        }
        let mut destination = None;
        let mut gateway = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                _ => {}
            }
        }
        let prefix = route.header.destination_prefix_length;
        if let (Some(ip), Some(gateway)) = (destination, gateway)
            && let Ok(net) = Ipv4Net::new(ip, prefix)
        {
            routes.push((net, gateway, route));
        }
    }
    Ok(routes)
}

/// Makes our routes exactly `wanted`: adds or replaces those that differ, deletes the rest.
pub(crate) async fn sync_routes(handle: &Handle, wanted: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), Error> {
    let existing = owned_routes(handle).await?;
    for (net, gateway, message) in existing.iter() {
        if !wanted.contains(&(*net, *gateway)) {
            match handle.route().del(message.clone()).execute().await {
                Err(e) if errno(&e) != Some(libc::ESRCH) => return Err(netlink(format!("delete route to {net}"))(e)),
                _ => {}
            }
        }
    }
    for &(net, gateway) in wanted {
        if existing.iter().any(|(n, g, _)| (*n, *g) == (net, gateway)) {
            continue;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network(), net.prefix_len())
            .gateway(gateway)
            .protocol(ROUTE_PROTOCOL)
            .build();
        handle.route().add(route).replace().execute().await.map_err(netlink(format!("route {net} via {gateway}")))?;
    }
    Ok(())
}
