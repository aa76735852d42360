/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the wire ABI between two nodes: control-socket messages and
 * the payload of channel records in a shared ring (shm/ring.h).
 *
 * Only fixed-width integers; little-endian (both ends run on one host).
 * Everything here arrives from the peer and is validated by the receiver
 * after it has been copied out: see src/link_hello.c (HELLO),
 * src/link_lanes.c (other control messages) and src/lane_rx.c (records).
 *
 * Control messages (one SOCK_SEQPACKET datagram each):
 *   HELLO   both sides, once, first. fds: [arena memfd, wake socket]: the
 *           wake socket is one end of a SOCK_DGRAM socketpair whose other
 *           end only the sender of the HELLO holds; the receiver sends a
 *           datagram on it to wake the sender's waitset, or its sleeping
 *           receiver where futex_waitv is missing (shm/ring.h, wake line).
 *   ATTACH  the fds of the next record of one lane that needs some (fd
 *           fields, ports, out-of-line trailing bytes), sent before that
 *           record is published, in the same order as that lane's
 *           records; it also carries the record's port descriptors.
 *   LANE    the answer to one port descriptor: the answering side's half
 *           of the new lane (its arena), or DROPPED (nobody took it).
  *   END     the producer of a lane sends nothing more on it (ATTACH nor
 *           record): the consumer may forget its id.
 *   WAKESOCK a waitset of the sender wants wakes for lanes the receiver
 *           produces on: fds: one end of a SOCK_DGRAM pair (the sender
 *           keeps the other); the id names it in consumers' wake lines.
 *   WAKECLOSE that waitset is done: the receiver closes its end.
 *   SPACE   a consumer freed the space a producer of the receiver asked
 *           for (shm/ring.h, signal line's space_at): the receiver's link
 *           moves its backlogs into their rings. Only a header; no fds.
 *   CANCEL  a context the sender gave (a CTX port, id) was cancelled: the
 *           receiver cancels what stands for it (struct cmesh_ctl_end).
 *   CTXDROP the receiver of a CTX port is done with it (every handle on
 *           it freed, or its message dropped): the sender forgets its id.
 *   CLAIM   the sender holds (or is being sent) a channel's receiver whose
 *           senders are the receiver's: it names the out lane they write
 *           by that lane's token (CMESH_PORT_F_REDIRECT) and asks for a
 *           lane of its own instead (struct cmesh_ctl_claim; fds: its half).
 *   INTRO   the sender links the receiver with another of its peers, which
 *           it names by its HELLO proc_id; fds: one end of a new
 *           SOCK_SEQPACKET socketpair whose other end goes to that peer in
 *           an INTRO naming the receiver (struct cmesh_ctl_intro). Each
 *           side may join a link over it (a HELLO exchange, no first
 *           channels that anyone holds), or close it.
 *   REROUTE the sender forwards what a lane the receiver writes carries
 *           to a channel receiver in another process, which the receiver
 *           may claim there instead (struct cmesh_ctl_reroute): the hop
 *           in the sender's process then ends. No fds.
 *
 * Lanes. A link carries any number of lanes (one direction of one
 * channel each). A lane id is a 32-bit number chosen by the side that
 * sends the endpoint creating it; the side whose HELLO node_id is lower
 * uses even ids, the other odd ones, each side increasing. Ids 0 and 1 are
 * the two lanes the HELLOs set up (0: written by the lower side).
 * Each dynamic lane has two halves, each an arena of the layout below:
 * the producer's (signal and tail lines and the ring's slots) and the consumer's
 * (head and wake lines). The endpoint's sender creates its half and sends
 * it in the port descriptor; the receiver answers with a LANE carrying
 * the other half.
 *
 * Arena layout of a node (its own arena; the peer maps it read-only):
 *   ctl line CMESH_PROTO_LINE_HEAD  consumer line of the ring it reads
 *   ctl line CMESH_PROTO_LINE_WAKE  wake line (sleeping, closed) of it
 *   ctl line CMESH_PROTO_LINE_SIGNAL signal line of the ring it writes
 *   ctl line CMESH_PROTO_LINE_TAIL   tail line of the ring it writes
 *   data region                      slot area of the ring it writes
 */
#ifndef CMESH_SHM_PROTO_H
#define CMESH_SHM_PROTO_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define CMESH_PROTO_MAGIC 0x48534d43u /* "CMSH" */
#define CMESH_PROTO_VERSION 23u

#define CMESH_CTL_HELLO 1u
#define CMESH_CTL_ATTACH 2u
#define CMESH_CTL_LANE 3u
#define CMESH_CTL_END 4u
#define CMESH_CTL_WAKESOCK 5u
#define CMESH_CTL_WAKECLOSE 6u
#define CMESH_CTL_SPACE 7u
#define CMESH_CTL_CANCEL 8u
#define CMESH_CTL_CTXDROP 9u
#define CMESH_CTL_CLAIM 10u
#define CMESH_CTL_INTRO 11u
#define CMESH_CTL_REROUTE 12u

/* Index of a 64-byte line in an arena's control region. */
#define CMESH_PROTO_LINE_HEAD 0u
#define CMESH_PROTO_LINE_WAKE 1u
#define CMESH_PROTO_LINE_SIGNAL 2u
#define CMESH_PROTO_LINE_TAIL 3u

/* Ring record kinds (shm/ring.h: 1..255). */
#define CMESH_REC_MSG 1u /* struct cmesh_rec_msg, message, trail */
/*
 * Every sender of the channel is gone. CLOSE and FAIL (and a kept lane's
 * LAST) end the lane: the consumer reads nothing after one (a record may
 * still land there: a split's FAIL goes while its local senders still send).
 */
#define CMESH_REC_CLOSE 2u
#define CMESH_REC_PLAIN 3u /* message, trail: no fds, nothing out of line */
/* As CLOSE, but the channel failed upstream (a forwarder's source died). */
#define CMESH_REC_FAIL 4u
/*
 * message, struct cmesh_rec_bulk: no fds; the trail lies in the lane's
 * bulk arena (CMESH_REC_F_ARENA), which the producer reuses once the
 * consumer's head has passed this record.
 */
#define CMESH_REC_BULK 5u
/*
 * As PLAIN, and the last record of this use of a kept lane (a reply
 * port's, CMESH_PORT_F_POOLABLE answered POOLED): its producer sends
 * nothing more in this use (no CLOSE follows; the consumer sees the lane
 * closed after it) and goes idle without saying so in its signal line:
 * the next use starts at the position after this record, with no ATTACH
 * sent since the last idle_attach. The consumer may then name the lane in
 * a REUSE port at once; a producer still finishing this use (between the
 * record and its idle) takes that REUSE when it is done. On a lane that
 * is not kept it is PLAIN then CLOSE.
 */
#define CMESH_REC_LAST 6u
/*
 * A message whose only resource is one REUSE port (an rpc request with a
 * kept reply port): struct cmesh_rec_reuse1, the message, its trailing
 * bytes. The port is in endpoint field `field` of the lane's type, a
 * oneshot sender's (only reply ports are kept: a POOLABLE or REUSE port in
 * any other field fails the link); its descriptor: {id, CMESH_PORT_WRITE,
 * ring_cap, CMESH_PORT_F_REUSE}. As MSG with F_PORTS and that one descriptor, in 12
 * bytes of header instead of 56: a request of up to 44 bytes is one line.
 */
#define CMESH_REC_REUSE1 7u
/*
 * struct cmesh_rec_mark: a sender of the lane left its process here (sent
 * on with a claim that names this mark, CMESH_PORT_F_REDIRECT): everything
 * it sent through this lane is before this record. A lane a sender's claim
 * made that waits for this mark of this lane is read from now on (or once
 * the lane ends). A mark nobody waits for is ignored.
 */
#define CMESH_REC_MARK 8u

struct cmesh_rec_mark {
	uint32_t mark; /* not 0 */
	uint32_t zero;
};

/*
 * 1..CMESH_REC_HINTS_MAX struct cmesh_rec_hint (protocol 18): the
 * receiver this lane feeds had senders in other processes when it was
 * sent on; the sending process forwards what they write through this
 * lane. For each: the process of such a sender, the token of the lane it
 * writes there (given in that lane's LANE answer), and a mark of this
 * lane. The reader may claim each sender there (a CLAIM with the token):
 * its claimed lane is read once this lane passed that MARK (written when
 * the old lane ended: everything it carried is before it) or ended. At
 * most one HINTS per lane, never on a kept reply lane; an entry's node,
 * token and mark are not 0, `zero` is 0: else -EPROTO. A hint the reader
 * cannot act on (no link with that process) is ignored: that sender stays
 * forwarded.
 */
#define CMESH_REC_HINTS 9u
#define CMESH_REC_HINTS_MAX 8u

struct cmesh_rec_hint {
	uint64_t node;	   /* that sender's process (HELLO proc_id) */
	uint64_t token[2]; /* of the lane it writes there */
	uint32_t mark;	   /* of this lane */
	uint32_t zero;
};

static_assert(sizeof(struct cmesh_rec_hint) == 32, "rec hint size");

/* Every control message starts with this. */
struct cmesh_ctl_hdr {
	uint32_t magic;	  /* CMESH_PROTO_MAGIC */
	uint16_t version; /* CMESH_PROTO_VERSION */
	uint16_t type;	  /* CMESH_CTL_* */
	uint32_t len;	  /* bytes of the whole message */
	uint32_t reserved;
};

static_assert(sizeof(struct cmesh_ctl_hdr) == 16, "ctl hdr size");
static_assert(offsetof(struct cmesh_ctl_hdr, type) == 6, "ctl hdr type");
static_assert(offsetof(struct cmesh_ctl_hdr, len) == 8, "ctl hdr len");

/*
 * HELLO. Sender: fills it once. Receiver: copies it, checks the header,
 * len == sizeof, arena_size and ring_cap bounds (the arena itself is then
 * validated by cmesh__arena_map_peer and the offsets by the ring attach).
 */
#define CMESH_CTL_NAME 48u

struct cmesh_ctl_hello {
	struct cmesh_ctl_hdr hdr;
	uint64_t node_id;    /* random, for logs */
	uint64_t arena_size; /* bytes of the sender's arena memfd */
	uint64_t out_fp;     /* type fingerprint of what the sender sends */
	uint64_t in_fp;	     /* type fingerprint of what it receives */
	uint32_t ring_cap;   /* capacity of the ring the sender writes */
	uint32_t pid;	     /* informational; SO_PEERCRED is authoritative */
	uint64_t max_trail;  /* largest trail it accepts (CMESH_MAX_MESSAGE) */
	/*
	 * The two types' names (cmesh_type.name), cut to fit and
	 * NUL-padded: for the log when the fingerprints disagree. Never
	 * trusted: printed only after every byte outside ' '..'~' became '?'.
	 */
	char out_name[CMESH_CTL_NAME];
	char in_name[CMESH_CTL_NAME];
	/*
	 * The sender's process (random, one per process, for as long as it
	 * lives; not node_id, which is one per link): the name a port's
	 * CMESH_PORT_F_REDIRECT gives the process its token is for. The
	 * peer's word: a process believes it about the peer only.
	 */
	uint64_t proc_id;
};

static_assert(sizeof(struct cmesh_ctl_hello) == 72 + 2 * CMESH_CTL_NAME,
	      "hello size");
static_assert(offsetof(struct cmesh_ctl_hello, proc_id) ==
		      64 + 2 * CMESH_CTL_NAME,
	      "hello proc_id");
static_assert(offsetof(struct cmesh_ctl_hello, node_id) == 16, "hello id");
static_assert(offsetof(struct cmesh_ctl_hello, arena_size) == 24, "arena");
static_assert(offsetof(struct cmesh_ctl_hello, out_fp) == 32, "out_fp");
static_assert(offsetof(struct cmesh_ctl_hello, in_fp) == 40, "in_fp");
static_assert(offsetof(struct cmesh_ctl_hello, ring_cap) == 48, "ring_cap");
static_assert(offsetof(struct cmesh_ctl_hello, max_trail) == 56, "max_trail");

/*
 * ATTACH. fds: nfds of them: the record's fd fields (fd_mask order), then
 * one arena per port descriptor, then the out-of-line trail. The header is
 * followed by nports struct cmesh_ctl_port, in the record's port_mask order.
 */
struct cmesh_ctl_attach {
	struct cmesh_ctl_hdr hdr;
	uint64_t seq;	 /* 1, 2, ... per lane: the record carries it */
	uint32_t lane;	 /* the lane whose record this belongs to */
	uint16_t nfds;	 /* equals the number of fds in the datagram */
	uint16_t nports; /* port descriptors after this header */
};

static_assert(sizeof(struct cmesh_ctl_attach) == 32, "attach size");
static_assert(offsetof(struct cmesh_ctl_attach, seq) == 16, "attach seq");
static_assert(offsetof(struct cmesh_ctl_attach, lane) == 24, "attach lane");
static_assert(offsetof(struct cmesh_ctl_attach, nfds) == 28, "attach nfds");

/* Port descriptor kinds: what the endpoint does on its new lane. */
#define CMESH_PORT_WRITE 1u /* a sender: the arena is the consumer's half */
#define CMESH_PORT_READ 2u  /* a receiver: the arena is the producer's half */
/*
 * A cancellation context: no lane, no fd, no LANE answer. ring_cap 0;
 * arena_size the ns left to its deadline when it was sent (UINT64_MAX:
 * none; a deadline crosses as time left, not as a clock reading); id 0
 * for one that cannot be cancelled from the sender's side (or ENDED),
 * else a number the sender has not given before on this link, larger
 * than each before it, which its CANCEL and the receiver's CTXDROP name.
 */
#define CMESH_PORT_CTX 3u

/*
 * A port: an endpoint that crossed the link. The receiver answers each
 * with one LANE (its half, or DROPPED), except a FAILED one. Checked:
 * kind, flags, ring_cap (a valid ring capacity), arena_size (bounds; the
 * arena itself is validated when it is mapped), id (the sender's parity,
 * not in use). The ATTACH carries one arena fd per port that is not
 * FAILED.
 */
struct cmesh_ctl_port {
	uint32_t id;	     /* the new lane */
	uint32_t kind;	     /* CMESH_PORT_* */
	uint32_t ring_cap;   /* capacity of the lane's ring */
	uint32_t flags;	     /* CMESH_PORT_F_* */
	uint64_t arena_size; /* bytes of the arena fd */
	uint32_t home;	     /* CMESH_PORT_F_HOME: a lane of ours it names */
	uint32_t reserved;   /* 0 */
	/* CMESH_PORT_F_REDIRECT (else 0): whom to claim from, and with what. */
	uint64_t node;	   /* that process's HELLO proc_id */
	uint64_t token[2]; /* the claim's token: not both 0 */
	/*
	 * With CMESH_PORT_F_REDIRECT naming the sender of the port (a channel
	 * endpoint from its peer's process), else 0: the token the taker
	 * lists its own end of the new lane under, for claims, and echoes
	 * in its LANE answer. The sender chose it (random), so it may hand
	 * it on before that answer comes. One already listed there is not
	 * listed again (the first one stays).
	 */
	uint64_t list[2];
};

/*
 * The endpoint had failed (its own peer's process failed): it arrives
 * failed. No lane, no fd, no answer: id, ring_cap and arena_size are 0.
 */
#define CMESH_PORT_F_FAILED 1u

/* A CTX port's context had been cancelled: it arrives cancelled (id 0). */
#define CMESH_PORT_F_ENDED 2u
/*
 * A oneshot sender's new lane that its sender would use again (a reply
 * port): the receiver may keep its side once done, answering POOLED. In
 * any other field (and so REUSE): -EPROTO.
 */
#define CMESH_PORT_F_POOLABLE 4u
/*
 * A lane kept from an earlier use (both sides answered POOLED, and that
 * use is over: the consumer took its LAST record, or the producer's
 * signal line said so, shm/ring.h idle_use):
 * `id` names it, no fd, arena_size 0, the same ring_cap. Bound already:
 * no LANE answer unless it is DROPPED. A kept lane never has END. No
 * ATTACH names it: a receiver that closes with it unread in its ring
 * answers DROPPED itself (shm/ring.h, the wake line's `closed`).
 */
#define CMESH_PORT_F_REUSE 8u

/*
 * A receiver's port (CMESH_PORT_READ, a channel's receiver) whose only
 * senders are ours, all of them through our out lane `home`, consumed by
 * the peer, on this link: its receiver is coming home. The new lane (`id`)
 * carries what the peer holds and forwards from `home` (its forwarder);
 * the receiver may take its senders' queue here again: we seal `home` and
 * end it, our senders queue here from then on, and the receiver reads the
 * new lane to its end first. `home` has either parity (a lane a CLAIM
 * made has the claimer's id). A hint: a `home` that is not such a lane
 * (gone since, or never, or the peer's) only makes it an ordinary port.
 * In any other port: -EPROTO.
 */
#define CMESH_PORT_F_HOME 16u

/*
 * A channel receiver's port (CMESH_PORT_READ) whose senders are all in
 * process `node`, writing one out lane there that `token` names: the
 * receiver may claim them (CLAIM, on its own link with `node`). Or a
 * channel sender's port (CMESH_PORT_WRITE) whose receiver is in process
 * `node`, reading the sender's lane, an in lane there that `token` names:
 * the sender may claim it (a lane of its own, read after that one). From
 * that process, `node` is itself; from a process that forwards the
 * endpoint (it alone used that lane), the one it got the token from. A
 * sender's port may also carry a mark in `home` (else 0): other senders
 * still write that lane, and a CMESH_REC_MARK record of that mark follows
 * everything this sender sent through it; its claim is read after that
 * record, not after the lane's end. A hint: a claim may be refused. In a
 * oneshot's port: -EPROTO. When `node` is the sender of the port, `list`
 * may name the token the taker lists its own end under (above).
 */
#define CMESH_PORT_F_REDIRECT 32u

static_assert(sizeof(struct cmesh_ctl_port) == 72, "port size");
static_assert(offsetof(struct cmesh_ctl_port, node) == 32, "port node");

/* Most port descriptors one ATTACH carries (a type's fields). */
#define CMESH_CTL_MAX_PORTS 64u

#define CMESH_LANE_F_DROPPED 1u /* no arena: the endpoint was dropped */
#define CMESH_LANE_F_POOLED 2u	/* kept for reuse (a POOLABLE port) */
/*
 * With DROPPED, answering a receiver's CLAIM only (port.kind WRITE; else
 * -EPROTO): the token names a lane that becomes claimable later (a
 * receiver's split: its senders elsewhere are still forwarded into it),
 * so the claimer may try again.
 */
#define CMESH_LANE_F_LATER 4u
/*
 * With DROPPED alone (since protocol 22): the port was lost to a failure
 * (the receiver of the message carrying it failed before taking it), so
 * its peer fails (-ECONNRESET) rather than closes. Not in the answer to
 * a claim (-EPROTO).
 */
#define CMESH_LANE_F_FAILED 8u

/* LANE. fds: the answering side's arena, none when DROPPED. */
struct cmesh_ctl_lane {
	struct cmesh_ctl_hdr hdr;
	uint32_t id;	     /* the lane of the port descriptor answered */
	uint32_t flags;	     /* CMESH_LANE_F_* */
	uint64_t arena_size; /* bytes of the arena fd, or 0 */
	/*
	 * In the answer to a CLAIM's port: the token of the new lane, for a
	 * later claim; in the answer to a channel receiver's port: the token
	 * of the lane it reads, for a claim by a sender of it sent on from
	 * the answered side; in the answer to a channel sender's port (since
	 * protocol 17): the token of the lane it writes, for a claim by its
	 * receiver sent on from the answered side (that receiver sent to the
	 * answering side comes home with CMESH_PORT_F_HOME naming the lane,
	 * no token). Else 0: none; never for a kept reply lane (-EPROTO).
	 */
	uint64_t token[2];
};

static_assert(sizeof(struct cmesh_ctl_lane) == 48, "lane size");

/*
 * CLAIM. fds: the claimer's half of a new lane. port.kind WRITE (the
 * claimer consumes: a receiver's claim): `token` names one of our out
 * lanes that carry a channel to a receiver elsewhere; found (once), the
 * lane's senders write the new lane from now on and the old one ends
 * (sealed, then CLOSE). port.kind READ (the claimer produces: a sender's
 * claim): `token` names one of our in lanes that a moved sender wrote;
 * found (once), its receiver reads the new lane once the old one has
 * ended. The answer is a LANE with our half and the new lane's token.
 * Not found (never given, claimed already, closed, or gone), or the
 * endpoint here is no longer where it was: LANE DROPPED (or the new lane
 * ends at once), nothing else; found but not claimable yet (a split's
 * lane, given with its receiver's port before its forwarder ended): LANE
 * DROPPED | LATER (one of another type or way is none: DROPPED). Checked:
 * the port as any port (no flags),
 * type_fp against the found lane's type, and the lane's direction
 * against the port's (else -EPROTO), but for port.home in a sender's claim:
 * the mark its port carried (0: none), which its new lane waits for
 * instead of the old lane's end (the token then stays: the lane's other
 * senders may claim too). `mine`: the claimer's token of its
 * new lane (0: none), which the receiver keeps for a later claim of that
 * lane's far end from elsewhere (a sender of the claimer's receiver, a
 * receiver of the claimer's sender, sent on). port.list: the token we
 * list our end of the new lane under and echo in the LANE answer (0: one
 * of ours). The claimer chose it, so it may name that end before the
 * answer comes (its endpoint sent on meanwhile: the process it goes to
 * claims there).
 */
struct cmesh_ctl_claim {
	struct cmesh_ctl_hdr hdr;
	uint64_t token[2];
	uint64_t type_fp; /* the channel's type fingerprint */
	struct cmesh_ctl_port port;
	uint64_t mine[2];
};

static_assert(sizeof(struct cmesh_ctl_claim) == 40 + 72 + 16, "claim size");

/*
 * INTRO. fds: one end of a SOCK_SEQPACKET socketpair. `proc` is the
 * process at the other end (its HELLO proc_id, as the sender's link with
 * it says): never 0, the receiver's own name, nor the sender's.
 */
struct cmesh_ctl_intro {
	struct cmesh_ctl_hdr hdr;
	uint64_t proc;
};

static_assert(sizeof(struct cmesh_ctl_intro) == 24, "intro size");

/*
 * REROUTE (protocol 23). `id`: an out lane of the receiver's on this link,
 * a channel sender's, whose records the sender (its consumer) forwards to
 * that channel's receiver in process `node` (neither side's name) by a
 * lane of its own; `token` names that receiver's end of it and `mark` a
 * MARK the sender writes there once it has forwarded everything `id`
 * brought. The receiver may claim that receiver with them (a CLAIM of
 * a sender's, marked), as if the sender's port had named it: its lane
 * then ends, which ends the hop. The sender takes no claim of its own end
 * of `id` from then on. Any other lane (none, one we read, a reply
 * port's): -EPROTO; zero node, token or mark, or fds: -EPROTO. One that
 * comes too late (the lane gone, its sender claiming or moved since) is
 * ignored.
 */
struct cmesh_ctl_reroute {
	struct cmesh_ctl_hdr hdr;
	uint32_t id;
	uint32_t mark;
	uint64_t node;
	uint64_t token[2];
};

static_assert(sizeof(struct cmesh_ctl_reroute) == 48, "reroute size");

/* END, WAKESOCK (one fd) and WAKECLOSE (none): one id each. */
struct cmesh_ctl_end {
	struct cmesh_ctl_hdr hdr;
	uint32_t id;
	uint32_t reserved;
};

static_assert(sizeof(struct cmesh_ctl_end) == 24, "end size");
/* CANCEL and CTXDROP have the layout of END; `id` names a CTX port. */

/* Record flags. */
#define CMESH_REC_F_ATTACH 1u /* fds/ports in the ATTACH numbered attach_seq */
#define CMESH_REC_F_OOL 2u    /* trail in a sealed memfd: the last fd */
/*
 * The record's ports are all REUSE ones (no fd, nothing for the link to
 * do on arrival) and no fd goes with it: their descriptors follow the
 * header in the record itself, popcount(port_mask) of them, before the
 * message: no ATTACH (and no wait for the peer's link thread to read it).
 */
#define CMESH_REC_F_PORTS 4u
/*
 * With F_ATTACH: one more fd after all others (after the OOL memfd): the
 * lane's bulk arena, a memfd sealed against shrinking and growing, of
 * CMESH_BULK_ARENA_MIN..MAX bytes, a power of two. Sent once per lane;
 * the consumer maps it read-only for BULK records. A second one is a
 * protocol error.
 */
#define CMESH_REC_F_ARENA 8u
#define CMESH_REC_F_ALL                                                        \
	(CMESH_REC_F_ATTACH | CMESH_REC_F_OOL | CMESH_REC_F_PORTS |            \
	 CMESH_REC_F_ARENA)

/* Header of a CMESH_REC_REUSE1 record. */
struct cmesh_rec_reuse1 {
	uint32_t id; /* the kept lane: the reader of this record produces on it */
	uint32_t ring_cap; /* its ring's capacity */
	uint32_t field;	   /* the endpoint field that carries it */
};

static_assert(sizeof(struct cmesh_rec_reuse1) == 12, "reuse1 size");

#define CMESH_BULK_ARENA_MIN (64u << 10)
#define CMESH_BULK_ARENA_MAX (64u << 20)

/*
 * The tail of a CMESH_REC_BULK record, after the message: where its
 * trailing bytes lie in the bulk arena. Consumer: checks off + len within
 * the arena, len against CMESH_MAX_MESSAGE, reserved 0; copies the bytes
 * out once, then consumes the record.
 */
struct cmesh_rec_bulk {
	uint64_t off;
	uint32_t len;
	uint32_t reserved;
};

static_assert(sizeof(struct cmesh_rec_bulk) == 16, "rec bulk size");

/*
 * Payload of a CMESH_REC_MSG record, followed by the message struct
 * (type size bytes) and, unless F_OOL, trail_len trailing bytes. Consumer:
 * copies it out with the record, then checks flags, the record length
 * against the type size and trail_len, trail_len against
 * CMESH_MAX_MESSAGE, fd_mask against the type's fd fields, port_mask
 * against its endpoint fields, and both against the attachment.
 */
struct cmesh_rec_msg {
	uint32_t trail_len;
	uint32_t flags;	     /* CMESH_REC_F_* */
	uint64_t fd_mask;    /* bit i: resource field i carries an fd */
	uint64_t attach_seq; /* F_ATTACH: the ATTACH message's seq */
	uint64_t port_mask;  /* bit i: endpoint field i carries a port */
};

static_assert(sizeof(struct cmesh_rec_msg) == 32, "rec msg size");
static_assert(offsetof(struct cmesh_rec_msg, fd_mask) == 8, "rec fd_mask");
static_assert(offsetof(struct cmesh_rec_msg, attach_seq) == 16, "rec seq");

#endif
