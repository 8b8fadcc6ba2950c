//! A script as nf_tables netlink messages: one batch (NFNL_MSG_BATCH_BEGIN … END) that the
//! kernel takes as one transaction, the way libnftnl encodes what nft sends
//! (uapi/linux/netfilter/nf_tables.h). Only the statements the node's rules use.

use super::{Action, ChainKind, Command, Hook, HookPoint, Key, KeyType, Match, Rule, Script, Verdict};
use crate::Error;
use crate::nfnetlink::{
    Buffer, Dumped, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, Socket, attribute, attributes, c_string,
};
use crate::proxy::Protocol;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;

// enum nf_tables_msg_types
const NEWTABLE: u16 = 0;
const GETTABLE: u16 = 1;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const GETCHAIN: u16 = 4;
const DELCHAIN: u16 = 5;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const GETSET: u16 = 10;
const DELSET: u16 = 11;
const NEWSETELEM: u16 = 12;
const DELSETELEM: u16 = 14;

// Attributes, each enum from 1 (UNSPEC is 0).
const TABLE_NAME: u16 = 1;
const TABLE_USERDATA: u16 = 6;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_EXPRESSIONS: u16 = 4;
const SET_TABLE: u16 = 1;
const SET_NAME: u16 = 2;
const SET_FLAGS: u16 = 3;
const SET_KEY_TYPE: u16 = 4;
const SET_KEY_LEN: u16 = 5;
const SET_DATA_TYPE: u16 = 6;
const SET_DATA_LEN: u16 = 7;
const SET_DESC: u16 = 9;
const SET_ID: u16 = 10;
const SET_TIMEOUT: u16 = 11;
const SET_USERDATA: u16 = 13;
const SET_DESC_SIZE: u16 = 1;
const SET_ELEM_LIST_TABLE: u16 = 1;
const SET_ELEM_LIST_SET: u16 = 2;
const SET_ELEM_LIST_ELEMENTS: u16 = 3;
const SET_ELEM_KEY: u16 = 1;
const SET_ELEM_DATA: u16 = 2;
const SET_ELEM_USERDATA: u16 = 6;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;

const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

// nft's data type ids (src/datatype.h), which `nft list` reads back to print keys; a
// concatenation is its types 6 bits each.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

// libnftnl's user data: type, length, value; comments are type 0, except a set's (7).
const UDATA_COMMENT: u8 = 0;
const UDATA_SET_COMMENT: u8 = 7;
// A set's `typeof`, as nft writes it (libnftnl's udata.h, nft's expression udata).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
// nft's protocol descriptions (proto.h) and their fields.
const PROTO_DESC_UDP: u32 = 6;
const PROTO_DESC_TCP: u32 = 8;
const PROTO_DESC_SCTP: u32 = 10;
const PROTO_DESC_IP: u32 = 12;
const IPHDR_DADDR: u32 = 12;
const DPORT_FIELD: u32 = 2; // TCPHDR_DPORT, UDPHDR_DPORT, SCTPHDR_DPORT

// Registers: the verdict, a 16-byte one, and the 4-byte ones that concatenations fill.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;
const REG32_01: u32 = 9;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// What [`dump_names`] lists.
#[derive(Clone, Copy)]
pub enum Listing {
    Tables,
    Chains,
    Sets,
}

/// Sends `script` as one batch; the kernel has committed it or refused all of it by
/// the time send returns (netlink hands the batch to nf_tables in the sender's call).
pub fn apply(socket: &Socket, script: &Script) -> Result<(), Error> {
    let mut batch = Buffer::default();
    batch.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES, |_| {});
    for (i, command) in script.commands.iter().enumerate() {
        encode(&mut batch, script.table, command, i as u32 + 1);
    }
    let end = script.commands.len() as u32 + 1;
    batch.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, NFNL_SUBSYS_NFTABLES, |_| {});
    // A batch is one datagram: the send buffer must hold it whole (SO_SNDBUFFORCE: we
    // are root), and the answers, errors only, fit in a modest receive buffer.
    socket.set_option(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, batch.bytes.len() + 4096)?;
    socket.send(&batch.bytes)?;
    let Some((seq, error)) = socket.refusals()?.into_iter().next() else { return Ok(()) };
    let what = match script.commands.get((seq as usize).wrapping_sub(1)) {
        Some(command) => script.line(command),
        None => "commit the transaction".into(),
    };
    Err(Error::Nftables(format!("nftables refused {what:?}: {error}")))
}

/// The names of the tables of the `ip` family, or of the chains or sets of `table`.
pub fn dump_names(socket: &Socket, listing: Listing, table: &str) -> Result<Vec<String>, Error> {
    let (kind, table_attr, name_attr) = match listing {
        Listing::Tables => (GETTABLE, 0, TABLE_NAME),
        Listing::Chains => (GETCHAIN, CHAIN_TABLE, CHAIN_NAME),
        Listing::Sets => (GETSET, SET_TABLE, SET_NAME),
    };
    let mut request = Buffer::default();
    request.message(nft(kind), NLM_F_REQUEST | NLM_F_DUMP, 1, NFPROTO_IPV4, 0, |b| {
        if table_attr != 0 {
            b.string(table_attr, table);
        }
    });
    let mut names = Vec::new();
    let dumped = socket.dump(&request.bytes, |payload| {
        // nfgenmsg (4 bytes), then the object's attributes.
        let attrs = attributes(&payload[4.min(payload.len())..]);
        let of_table = table_attr == 0 || attrs.iter().any(|(t, v)| *t == table_attr && c_string(v) == table);
        if let Some(name) = attribute(&attrs, name_attr)
            && of_table
        {
            names.push(c_string(name).to_string());
        }
    })?;
    match dumped {
        Dumped::Done => Ok(names),
        // No such table: nothing in it.
        Dumped::Refused(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(names),
        Dumped::Refused(error) => Err(Error::Nftables(format!("list nftables: {error}"))),
    }
}

fn nft(kind: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind
}

/// nf_tables' own attribute shapes.
impl Buffer {
    /// NFTA_DATA_VALUE inside `kind`.
    fn data(&mut self, kind: u16, value: &[u8]) {
        self.nested(kind, |b| b.attr(DATA_VALUE, value));
    }

    fn verdict(&mut self, kind: u16, code: i32, chain: Option<&str>) {
        self.nested(kind, |b| {
            b.nested(DATA_VERDICT, |b| {
                b.u32(VERDICT_CODE, code as u32);
                if let Some(chain) = chain {
                    b.string(VERDICT_CHAIN, chain);
                }
            })
        });
    }

    /// A comment as libnftnl's user data.
    fn comment(&mut self, kind: u16, udata_type: u8, comment: &str) {
        let mut value = Vec::new();
        udata_comment(&mut value, udata_type, comment);
        self.attr(kind, &value);
    }
}

/// A comment item: its text, NUL-terminated.
fn udata_comment(out: &mut Vec<u8>, kind: u8, comment: &str) {
    let mut text = comment.as_bytes().to_vec();
    text.push(0);
    udata(out, kind, &text);
}

/// One libnftnl user data item: type, length, value.
fn udata(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

fn udata_u32(out: &mut Vec<u8>, kind: u8, value: u32) {
    udata(out, kind, &value.to_ne_bytes());
}

/// Items nested in one item.
fn udata_nested(out: &mut Vec<u8>, kind: u8, items: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    items(&mut inner);
    udata(out, kind, &inner);
}

/// An expression in a `typeof`: its type, then its own items.
fn udata_expression(out: &mut Vec<u8>, kind: u8, expression: u32, items: impl FnOnce(&mut Vec<u8>)) {
    udata_nested(out, kind, |out| {
        udata_u32(out, 0, expression);
        udata_nested(out, 1, items);
    });
}

/// A payload field in a `typeof`: its protocol description and field.
fn udata_payload(out: &mut Vec<u8>, kind: u8, description: u32, field: u32) {
    udata_expression(out, kind, EXPR_PAYLOAD, |out| {
        udata_u32(out, 0, description);
        udata_u32(out, 1, field);
    });
}

/// The user data of an endpoint map: `typeof numgen random mod BLOCK : ip daddr . PROTOCOL
/// dport` and its comment, the way nft 1.0.6 writes them, so that `nft list` prints them so.
fn endpoint_map_udata(block: u32, protocol: Protocol, comment: &str) -> Vec<u8> {
    let port_description = match protocol {
        Protocol::Tcp => PROTO_DESC_TCP,
        Protocol::Udp => PROTO_DESC_UDP,
        Protocol::Sctp => PROTO_DESC_SCTP,
    };
    let mut out = Vec::new();
    udata_u32(&mut out, UDATA_SET_KEYBYTEORDER, BYTEORDER_HOST_ENDIAN);
    udata_u32(&mut out, UDATA_SET_DATABYTEORDER, 0);
    udata_nested(&mut out, UDATA_SET_KEY_TYPEOF, |out| {
        udata_u32(out, 0, EXPR_NUMGEN);
        udata_nested(out, 1, |out| {
            udata_u32(out, 0, NFT_NG_RANDOM);
            udata_u32(out, 1, block);
            udata_u32(out, 2, 0); // offset
        });
    });
    udata_expression(&mut out, UDATA_SET_DATA_TYPEOF, EXPR_CONCAT, |out| {
        udata_payload(out, 0, PROTO_DESC_IP, IPHDR_DADDR);
        udata_payload(out, 1, port_description, DPORT_FIELD);
    });
    udata_u32(&mut out, UDATA_SET_DATA_INTERVAL, 0);
    udata_comment(&mut out, UDATA_SET_COMMENT, comment);
    out
}

fn encode(b: &mut Buffer, table: &str, command: &Command, seq: u32) {
    let create = NLM_F_REQUEST | NLM_F_CREATE;
    match command {
        Command::AddTable { comment } => b.message(nft(NEWTABLE), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(TABLE_NAME, table);
            b.comment(TABLE_USERDATA, UDATA_COMMENT, comment);
        }),
        Command::DeleteTable => {
            b.message(nft(DELTABLE), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| b.string(TABLE_NAME, table))
        }
        Command::AddChain { name, hook } => b.message(nft(NEWCHAIN), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(CHAIN_TABLE, table);
            b.string(CHAIN_NAME, name);
            if let Some(hook) = hook {
                b.nested(CHAIN_HOOK, |b| {
                    b.u32(HOOK_HOOKNUM, hook_number(hook));
                    b.u32(HOOK_PRIORITY, hook.priority as u32);
                });
                b.string(
                    CHAIN_TYPE,
                    match hook.kind {
                        ChainKind::Filter => "filter",
                        ChainKind::Nat => "nat",
                    },
                );
            }
        }),
        // A rule deletion without a handle empties the chain.
        Command::FlushChain(chain) => b.message(nft(DELRULE), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
            b.string(RULE_TABLE, table);
            b.string(RULE_CHAIN, chain);
        }),
        Command::DeleteChain(chain) => b.message(nft(DELCHAIN), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
            b.string(CHAIN_TABLE, table);
            b.string(CHAIN_NAME, chain);
        }),
        Command::AddRule { chain, rule } => b.message(nft(NEWRULE), create | NLM_F_APPEND, seq, NFPROTO_IPV4, 0, |b| {
            b.string(RULE_TABLE, table);
            b.string(RULE_CHAIN, chain);
            b.nested(RULE_EXPRESSIONS, |b| expressions(b, rule));
        }),
        Command::AddMap { name, key, comment } => b.message(nft(NEWSET), create, seq, NFPROTO_IPV4, 0, |b| {
            let (key_type, key_len) = match key {
                KeyType::Destination => ((TYPE_IPADDR << 12) | (TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE, 12),
                KeyType::Port => ((TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE, 8),
            };
            b.string(SET_TABLE, table);
            b.string(SET_NAME, name);
            b.u32(SET_FLAGS, NFT_SET_MAP);
            b.u32(SET_KEY_TYPE, key_type);
            b.u32(SET_KEY_LEN, key_len);
            b.u32(SET_DATA_TYPE, NFT_DATA_VERDICT);
            b.u32(SET_ID, seq);
            b.comment(SET_USERDATA, UDATA_SET_COMMENT, comment);
        }),
        // An element deletion without elements empties the set.
        Command::FlushMap(map) | Command::FlushSet(map) => {
            b.message(nft(DELSETELEM), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
                b.string(SET_ELEM_LIST_TABLE, table);
                b.string(SET_ELEM_LIST_SET, map);
            })
        }
        Command::AddEndpointMap { name, protocol, block, comment } => {
            b.message(nft(NEWSET), create, seq, NFPROTO_IPV4, 0, |b| {
                b.string(SET_TABLE, table);
                b.string(SET_NAME, name);
                b.u32(SET_FLAGS, NFT_SET_MAP);
                b.u32(SET_KEY_TYPE, TYPE_INTEGER);
                b.u32(SET_KEY_LEN, 4);
                b.u32(SET_DATA_TYPE, (TYPE_IPADDR << 6) | TYPE_INET_SERVICE);
                b.u32(SET_DATA_LEN, 8);
                b.u32(SET_ID, seq);
                b.attr(SET_USERDATA, &endpoint_map_udata(*block, *protocol, comment));
            })
        }
        Command::AddEndpoints { map, endpoints } => b.message(nft(NEWSETELEM), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_ELEM_LIST_TABLE, table);
            b.string(SET_ELEM_LIST_SET, map);
            b.nested(SET_ELEM_LIST_ELEMENTS, |b| {
                for (key, endpoint) in endpoints {
                    b.nested(LIST_ELEM, |b| {
                        b.data(SET_ELEM_KEY, &key.to_ne_bytes());
                        b.data(SET_ELEM_DATA, &endpoint_bytes(*endpoint));
                    });
                }
            });
        }),
        Command::DeleteEndpoints { map, keys } => {
            b.message(nft(DELSETELEM), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
                b.string(SET_ELEM_LIST_TABLE, table);
                b.string(SET_ELEM_LIST_SET, map);
                b.nested(SET_ELEM_LIST_ELEMENTS, |b| {
                    for key in keys {
                        b.nested(LIST_ELEM, |b| b.data(SET_ELEM_KEY, &key.to_ne_bytes()));
                    }
                });
            })
        }
        Command::AddPairSet { name, comment } => b.message(nft(NEWSET), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_TABLE, table);
            b.string(SET_NAME, name);
            b.u32(SET_KEY_TYPE, (TYPE_IPADDR << 6) | TYPE_IPADDR);
            b.u32(SET_KEY_LEN, 8);
            b.u32(SET_ID, seq);
            b.comment(SET_USERDATA, UDATA_SET_COMMENT, comment);
        }),
        Command::AddPairs { set, addresses } | Command::DeletePairs { set, addresses } => {
            let (kind, flags) = if matches!(command, Command::AddPairs { .. }) {
                (NEWSETELEM, create)
            } else {
                (DELSETELEM, NLM_F_REQUEST)
            };
            b.message(nft(kind), flags, seq, NFPROTO_IPV4, 0, |b| {
                b.string(SET_ELEM_LIST_TABLE, table);
                b.string(SET_ELEM_LIST_SET, set);
                b.nested(SET_ELEM_LIST_ELEMENTS, |b| {
                    for address in addresses {
                        let octets = address.octets();
                        b.nested(LIST_ELEM, |b| b.data(SET_ELEM_KEY, &[octets, octets].concat()));
                    }
                });
            })
        }
        Command::AddDynamicSet { name, timeout } => b.message(nft(NEWSET), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_TABLE, table);
            b.string(SET_NAME, name);
            b.u32(SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
            b.u32(SET_KEY_TYPE, TYPE_IPADDR);
            b.u32(SET_KEY_LEN, 4);
            b.u32(SET_ID, seq);
            b.attr(SET_TIMEOUT, &(u64::from(*timeout) * 1000).to_be_bytes());
            b.nested(SET_DESC, |b| b.u32(SET_DESC_SIZE, 65535));
        }),
        Command::DeleteSet(set) => b.message(nft(DELSET), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_TABLE, table);
            b.string(SET_NAME, set);
        }),
        Command::AddElement { map, element } => b.message(nft(NEWSETELEM), create, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_ELEM_LIST_TABLE, table);
            b.string(SET_ELEM_LIST_SET, map);
            b.nested(SET_ELEM_LIST_ELEMENTS, |b| {
                b.nested(LIST_ELEM, |b| {
                    b.data(SET_ELEM_KEY, &key_bytes(&element.key));
                    match &element.verdict {
                        Verdict::Goto(chain) => b.verdict(SET_ELEM_DATA, NFT_GOTO, Some(chain)),
                        Verdict::Drop => b.verdict(SET_ELEM_DATA, NF_DROP, None),
                    }
                    if let Some(comment) = &element.comment {
                        b.comment(SET_ELEM_USERDATA, UDATA_COMMENT, comment);
                    }
                })
            });
        }),
        Command::DeleteElement { map, key } => b.message(nft(DELSETELEM), NLM_F_REQUEST, seq, NFPROTO_IPV4, 0, |b| {
            b.string(SET_ELEM_LIST_TABLE, table);
            b.string(SET_ELEM_LIST_SET, map);
            b.nested(SET_ELEM_LIST_ELEMENTS, |b| b.nested(LIST_ELEM, |b| b.data(SET_ELEM_KEY, &key_bytes(key))));
        }),
    }
}

fn hook_number(hook: &Hook) -> u32 {
    match hook.hook {
        HookPoint::Prerouting => 0,
        HookPoint::Input => 1,
        HookPoint::Forward => 2,
        HookPoint::Output => 3,
        HookPoint::Postrouting => 4,
    }
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// An endpoint as a concatenation's registers hold it.
fn endpoint_bytes(endpoint: std::net::SocketAddrV4) -> Vec<u8> {
    let mut bytes = endpoint.ip().octets().to_vec();
    bytes.extend_from_slice(&endpoint.port().to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes
}

/// A key as the registers of a concatenation hold it: each field from the start of a
/// 4-byte register, zero-padded.
fn key_bytes(key: &Key) -> Vec<u8> {
    let (ip, protocol, port) = match *key {
        Key::Destination(ip, protocol, port) => (Some(ip), protocol, port),
        Key::Port(protocol, port) => (None, protocol, port),
    };
    let mut bytes = ip.map(|ip| ip.octets().to_vec()).unwrap_or_default();
    bytes.extend_from_slice(&[protocol_number(protocol), 0, 0, 0]);
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes
}

/// One expression: its name and attributes.
fn expr(b: &mut Buffer, name: &str, body: impl FnOnce(&mut Buffer)) {
    b.nested(LIST_ELEM, |b| {
        b.string(EXPR_NAME, name);
        b.nested(EXPR_DATA, body);
    });
}

/// Header bases of the payload expression.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
const META_MARK: u32 = 3;
const META_L4PROTO: u32 = 16;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;

fn payload(b: &mut Buffer, reg: u32, base: u32, offset: u32, len: u32) {
    expr(b, "payload", |b| {
        b.u32(1, reg); // DREG
        b.u32(2, base);
        b.u32(3, offset);
        b.u32(4, len);
    });
}

fn meta_load(b: &mut Buffer, reg: u32, key: u32) {
    expr(b, "meta", |b| {
        b.u32(1, reg); // DREG
        b.u32(2, key);
    });
}

fn cmp(b: &mut Buffer, reg: u32, op: u32, value: &[u8]) {
    expr(b, "cmp", |b| {
        b.u32(1, reg);
        b.u32(2, op);
        b.data(3, value);
    });
}

/// reg = (reg & mask) ^ xor
fn bitwise(b: &mut Buffer, reg: u32, mask: &[u8], xor: &[u8]) {
    expr(b, "bitwise", |b| {
        b.u32(1, reg); // SREG
        b.u32(2, reg); // DREG
        b.u32(3, mask.len() as u32);
        b.data(4, mask);
        b.data(5, xor);
    });
}

fn immediate_verdict(b: &mut Buffer, code: i32, chain: Option<&str>) {
    expr(b, "immediate", |b| {
        b.u32(1, REG_VERDICT);
        b.verdict(2, code, chain);
    });
}

fn immediate_data(b: &mut Buffer, reg: u32, value: &[u8]) {
    expr(b, "immediate", |b| {
        b.u32(1, reg);
        b.data(2, value);
    });
}

/// Looks register `reg` up in `set`: a match, or with `into` a map's value in that register.
fn lookup(b: &mut Buffer, set: &str, reg: u32, into: Option<u32>) {
    expr(b, "lookup", |b| {
        b.string(1, set);
        b.u32(2, reg); // SREG
        if let Some(dreg) = into {
            b.u32(3, dreg); // DREG
        }
    });
}

const NFT_NG_RANDOM: u32 = 1;

/// `numgen random mod MODULUS offset OFFSET` into `reg`.
fn numgen(b: &mut Buffer, reg: u32, modulus: usize, offset: u32) {
    expr(b, "numgen", |b| {
        b.u32(1, reg); // DREG
        b.u32(2, modulus as u32);
        b.u32(3, NFT_NG_RANDOM);
        b.u32(4, offset);
    });
}

/// Loads an address field and compares it with `net` (a prefix compares its masked bits).
fn address_match(b: &mut Buffer, offset: u32, net: ipnet::Ipv4Net, op: u32) {
    payload(b, REG_1, NETWORK_HEADER, offset, 4);
    if net.prefix_len() < 32 {
        bitwise(b, REG_1, &net.netmask().octets(), &[0; 4]);
    }
    cmp(b, REG_1, op, &net.network().octets());
}

fn host(ip: std::net::Ipv4Addr) -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::from(ip)
}

fn expressions(b: &mut Buffer, rule: &Rule) {
    for m in &rule.matches {
        match m {
            Match::SourceIs(ip) => address_match(b, IP_SADDR, host(*ip), CMP_EQ),
            Match::SourceIn(net) => address_match(b, IP_SADDR, *net, CMP_EQ),
            Match::SourceNotIn(net) => address_match(b, IP_SADDR, *net, CMP_NEQ),
            Match::SourceInSet(set) => {
                payload(b, REG_1, NETWORK_HEADER, IP_SADDR, 4);
                lookup(b, set, REG_1, None);
            }
            Match::SourceAndDestinationInSet(set) => {
                payload(b, REG_1, NETWORK_HEADER, IP_SADDR, 4);
                payload(b, REG32_01, NETWORK_HEADER, IP_DADDR, 4);
                lookup(b, set, REG_1, None);
            }
            Match::DestinationIs(ip) => address_match(b, IP_DADDR, host(*ip), CMP_EQ),
            Match::DestinationIn(net) => address_match(b, IP_DADDR, *net, CMP_EQ),
            Match::DestinationNotIn(net) => address_match(b, IP_DADDR, *net, CMP_NEQ),
            Match::Port(protocol, port) => {
                meta_load(b, REG_1, META_L4PROTO);
                cmp(b, REG_1, CMP_EQ, &[protocol_number(*protocol)]);
                payload(b, REG_1, TRANSPORT_HEADER, 2, 2);
                cmp(b, REG_1, CMP_EQ, &port.to_be_bytes());
            }
            Match::Protocol(protocol) => {
                meta_load(b, REG_1, META_L4PROTO);
                cmp(b, REG_1, CMP_EQ, &[protocol_number(*protocol)]);
            }
            Match::NewConnection => {
                expr(b, "ct", |b| {
                    b.u32(1, REG_1); // DREG
                    b.u32(2, 0); // NFT_CT_STATE
                });
                bitwise(b, REG_1, &8u32.to_ne_bytes(), &[0; 4]); // NF_CT_STATE_BIT(IP_CT_NEW)
                cmp(b, REG_1, CMP_NEQ, &[0; 4]);
            }
            Match::Dnatted => {
                expr(b, "ct", |b| {
                    b.u32(1, REG_1); // DREG
                    b.u32(2, 2); // NFT_CT_STATUS
                });
                bitwise(b, REG_1, &0x20u32.to_ne_bytes(), &[0; 4]); // IPS_DST_NAT
                cmp(b, REG_1, CMP_NEQ, &[0; 4]);
            }
            Match::LocalDestination | Match::LocalSource => {
                let address = if matches!(m, Match::LocalDestination) { 2 } else { 1 }; // NFTA_FIB_F_DADDR, _SADDR
                expr(b, "fib", |b| {
                    b.u32(1, REG_1); // DREG
                    b.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
                    b.u32(3, address);
                });
                cmp(b, REG_1, CMP_EQ, &2u32.to_ne_bytes()); // RTN_LOCAL
            }
            Match::MarkSet(bits) | Match::MarkClear(bits) => {
                meta_load(b, REG_1, META_MARK);
                bitwise(b, REG_1, &bits.to_ne_bytes(), &[0; 4]);
                let wanted = if matches!(m, Match::MarkSet(_)) { *bits } else { 0 };
                cmp(b, REG_1, CMP_EQ, &wanted.to_ne_bytes());
            }
            Match::OneIn(n) => {
                numgen(b, REG_1, *n, 0);
                cmp(b, REG_1, CMP_EQ, &[0; 4]);
            }
        }
    }
    for action in &rule.actions {
        match action {
            Action::Jump(chain) => immediate_verdict(b, NFT_JUMP, Some(chain)),
            Action::Goto(chain) => immediate_verdict(b, NFT_GOTO, Some(chain)),
            Action::Return => immediate_verdict(b, NFT_RETURN, None),
            Action::Accept => immediate_verdict(b, NF_ACCEPT, None),
            Action::Drop => immediate_verdict(b, NF_DROP, None),
            Action::Reject => expr(b, "reject", |b| {
                b.u32(1, 0); // NFT_REJECT_ICMP_UNREACH
                b.attr(2, &[3]); // ICMP_PORT_UNREACH
            }),
            Action::SetMark(bits) | Action::ToggleMark(bits) => {
                meta_load(b, REG_1, META_MARK);
                if matches!(action, Action::SetMark(_)) {
                    bitwise(b, REG_1, &(!bits).to_ne_bytes(), &bits.to_ne_bytes());
                } else {
                    bitwise(b, REG_1, &u32::MAX.to_ne_bytes(), &bits.to_ne_bytes());
                }
                expr(b, "meta", |b| {
                    b.u32(2, META_MARK);
                    b.u32(3, REG_1); // SREG
                });
            }
            Action::Masquerade { fully_random } => expr(b, "masq", |b| {
                if *fully_random {
                    b.u32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                }
            }),
            Action::Dnat(to) => {
                immediate_data(b, REG_1, &to.ip().octets());
                immediate_data(b, REG_2, &to.port().to_be_bytes());
                expr(b, "nat", |b| {
                    b.u32(1, 1); // NFT_NAT_DNAT
                    b.u32(2, u32::from(NFPROTO_IPV4));
                    b.u32(3, REG_1); // REG_ADDR_MIN
                    b.u32(5, REG_2); // REG_PROTO_MIN
                });
            }
            Action::DnatToOneOf { map, first, count } => {
                numgen(b, REG_1, *count, *first);
                lookup(b, map, REG_1, Some(REG_1));
                expr(b, "nat", |b| {
                    b.u32(1, 1); // NFT_NAT_DNAT
                    b.u32(2, u32::from(NFPROTO_IPV4));
                    b.u32(3, REG_1); // REG_ADDR_MIN
                    b.u32(4, REG_1); // REG_ADDR_MAX
                    b.u32(5, REG32_01); // REG_PROTO_MIN
                    b.u32(6, REG32_01); // REG_PROTO_MAX
                    b.u32(7, 0x3); // NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
                });
            }
            Action::RememberSource(set) => {
                payload(b, REG_1, NETWORK_HEADER, IP_SADDR, 4);
                expr(b, "dynset", |b| {
                    b.string(1, set); // SET_NAME
                    b.u32(3, 1); // NFT_DYNSET_OP_UPDATE
                    b.u32(4, REG_1); // SREG_KEY
                });
            }
            Action::DestinationVmap(map) => {
                payload(b, REG32_00, NETWORK_HEADER, IP_DADDR, 4);
                meta_load(b, REG32_00 + 1, META_L4PROTO);
                payload(b, REG32_00 + 2, TRANSPORT_HEADER, 2, 2);
                lookup(b, map, REG32_00, Some(REG_VERDICT));
            }
            Action::PortVmap(map) => {
                meta_load(b, REG32_00, META_L4PROTO);
                payload(b, REG32_00 + 1, TRANSPORT_HEADER, 2, 2);
                lookup(b, map, REG32_00, Some(REG_VERDICT));
            }
        }
    }
}
