/* lan/gossip_msg.h: the wire format of LAN gossip (port 8301, udp probes and tcp push-pull) and
 * its encryption. Pure: bytes in, structs out, no sockets and no clock, so the decoder can be
 * fuzzed alone (tests/fuzz/fuzz_gossip_msg.c). docs/gossip.md describes the protocol.
 *
 * A plain packet:
 *   byte 0      DG_GOSSIP_MAGIC (0xD1: dcgate LAN gossip, version 1)
 *   byte 1      n, the number of messages (1..DG_GOSSIP_MAX_COMPOUND)
 *   n times     [type u8][length u32, big-endian][body: length bytes]
 * and nothing after the last message. A datagram is at most DG_GOSSIP_UDP_MAX bytes (encrypted
 * form included) and never carries a PUSHPULL; a stream packet (tcp) is exactly one PUSHPULL of
 * at most DG_GOSSIP_STREAM_MAX bytes. All integers are big-endian.
 *
 * Bodies (str8 = u8 length then that many bytes; str16 = u16 length then bytes; no NUL bytes):
 *   PING      seq u32, from str8, target str8         "are you target? answer seq"
 *   ACK       seq u32, from str8                      the answer (relayed for indirect probes)
 *   NACK      seq u32, from str8                      a relay that heard nothing from the target
 *   INDIRECT  seq u32, target str8, addr str8, port u16, from str8
 *                                                     "probe target at addr:port for me"
 *   ALIVE     node (below) without status             name is alive at this incarnation
 *   SUSPECT   name str8, incarnation u32, from str8   from suspects name
 *   DEAD      name str8, incarnation u32, from str8   from declares name failed
 *   LEAVE     name str8, incarnation u32              name left gracefully
 *   PUSHPULL  flags u8 (bit 0 join, bit 1 reply), count u16, count nodes with status
 * A node: name str8, addr str8, port u16, [status u8], incarnation u32, ntags u8, then ntags
 * pairs of key str16, value str16. Names are 1..DG_GOSSIP_NAME_MAX bytes, addresses
 * 1..DG_GOSSIP_ADDR_MAX, tag keys 1..DG_GOSSIP_TAG_MAX, values 0..DG_GOSSIP_TAG_MAX, at most
 * DG_GOSSIP_MAX_TAGS pairs whose encoded size is at most DG_GOSSIP_TAGS_BYTES (so one ALIVE
 * always fits in a datagram).
 *
 * An encrypted packet (Consul's -encrypt key, AES-256-GCM):
 *   byte 0      DG_GOSSIP_SEALED (0xE1), also the additional authenticated data
 *   12 bytes    a random nonce
 *   ...         the ciphertext of a plain packet
 *   16 bytes    the GCM tag */
#ifndef DG_GOSSIP_MSG_H
#define DG_GOSSIP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define DG_GOSSIP_MAGIC  0xD1
#define DG_GOSSIP_SEALED 0xE1

/* ---- limits: every count and length the decoder accepts ---- */
#define DG_GOSSIP_NAME_MAX      128               /* a member name */
#define DG_GOSSIP_ADDR_MAX      64                /* an address literal, no port */
#define DG_GOSSIP_TAG_MAX       256               /* a tag key or value */
#define DG_GOSSIP_MAX_TAGS      32                /* tag pairs of one member */
#define DG_GOSSIP_TAGS_BYTES    1024              /* their encoded size (memberlist: 512) */
#define DG_GOSSIP_MAX_MEMBERS   4096              /* members in one PUSHPULL, and known */
#define DG_GOSSIP_UDP_MAX       1400              /* one datagram, encryption included */
#define DG_GOSSIP_MAX_COMPOUND  64                /* messages in one packet */
#define DG_GOSSIP_STREAM_MAX    (8 * 1024 * 1024) /* one tcp PUSHPULL */
#define DG_GOSSIP_KEY_LEN       32                /* AES-256 */
#define DG_GOSSIP_NONCE_LEN     12
#define DG_GOSSIP_GCM_TAG_LEN   16
#define DG_GOSSIP_SEAL_OVERHEAD (1 + DG_GOSSIP_NONCE_LEN + DG_GOSSIP_GCM_TAG_LEN)

enum dg_gossip_type {
	DG_GOSSIP_PING = 1,
	DG_GOSSIP_ACK = 2,
	DG_GOSSIP_NACK = 3,
	DG_GOSSIP_INDIRECT = 4,
	DG_GOSSIP_ALIVE = 5,
	DG_GOSSIP_SUSPECT = 6,
	DG_GOSSIP_DEAD = 7,
	DG_GOSSIP_LEAVE = 8,
	DG_GOSSIP_PUSHPULL = 9,
};

/* Member status on the wire and in dg_gossip_member: Consul's serf numbers. */
enum dg_gossip_status {
	DG_GOSSIP_NONE = 0,
	DG_GOSSIP_ALIVE_ST = 1,
	DG_GOSSIP_LEAVING = 2,
	DG_GOSSIP_LEFT = 3,
	DG_GOSSIP_FAILED = 4,
};

#define DG_GOSSIP_PP_JOIN  0x01
#define DG_GOSSIP_PP_REPLY 0x02

struct dg_gossip_tag {
	const char *key;
	const char *value;
};

/* A member as ALIVE and PUSHPULL carry it. Strings are NUL-terminated. */
struct dg_gossip_node {
	const char *name;
	const char *addr;
	uint16_t port;
	uint8_t status; /* PUSHPULL only (1..4); DG_GOSSIP_ALIVE_ST in an ALIVE */
	uint32_t incarnation;
	size_t ntags;
	const struct dg_gossip_tag *tags;
};

/* One message. Which fields mean something depends on type (see the top of this file):
 * SUSPECT, DEAD and LEAVE use node.name and node.incarnation. */
struct dg_gossip_msg {
	uint8_t type;
	uint32_t seq;
	const char *from;
	const char *target;
	const char *addr;
	uint16_t port;
	struct dg_gossip_node node;
	uint8_t flags;
	size_t nmembers;
	const struct dg_gossip_node *members;
};

/* A decoded packet. Every pointer in msg points into memory owned by the packet (mem), which
 * dg_gossip_packet_fini frees; nothing points into the input buffer. */
struct dg_gossip_packet {
	size_t n;
	struct dg_gossip_msg msg[DG_GOSSIP_MAX_COMPOUND];
	void *mem;
};

/* Decodes a plain packet of len bytes; stream says it came over tcp (one PUSHPULL, up to
 * DG_GOSSIP_STREAM_MAX) rather than udp (no PUSHPULL, up to DG_GOSSIP_UDP_MAX). Never reads
 * outside buf[0..len); what it allocates is bounded by len and the limits above. Returns 0, or
 * DG_EINVAL / DG_ETOOBIG with the reason in err (for the caller's counter and debug log). On
 * failure out holds nothing, and dg_gossip_packet_fini is safe either way. */
int dg_gossip_packet_decode(const void *buf, size_t len, bool stream,
			    struct dg_gossip_packet *out, char *err, size_t errlen);
void dg_gossip_packet_fini(struct dg_gossip_packet *p);

/* Appends one framed message ([type][length][body]) to out. Returns 0, DG_EINVAL (unknown type,
 * a missing, empty, over-long or NUL-containing string, a bad status or flag, too many tags) or
 * DG_ETOOBIG (too many members, tags over DG_GOSSIP_TAGS_BYTES), DG_ENOMEM; on failure out is
 * left as it was. Whatever this accepts, the decoder accepts. */
int dg_gossip_msg_encode(struct dg_buf *out, const struct dg_gossip_msg *m);

/* Building a packet: begin writes the 2-byte packet header into an empty buffer; append adds
 * one framed message (from dg_gossip_msg_encode) if the packet stays within max bytes and
 * DG_GOSSIP_MAX_COMPOUND messages, else returns DG_ETOOBIG and leaves pkt as it was. */
int dg_gossip_packet_begin(struct dg_buf *pkt);
int dg_gossip_packet_append(struct dg_buf *pkt, const void *msg, size_t len, size_t max);
/* The whole packet of n messages (begin + encode + append), appended to an empty out; max as
 * above. 0 or the first error. */
int dg_gossip_packet_encode(struct dg_buf *out, const struct dg_gossip_msg *msgs, size_t n,
			    size_t max);

/* The type's name for logs ("PING", ...; "unknown" otherwise). */
const char *dg_gossip_type_name(int type);

/* ---- encryption (lan/gossip_crypt.c, the one part that needs OpenSSL's libcrypto; kept in its
 * own file so that the fuzz build of the decoder links without it) ---- */

/* Parses Consul's -encrypt value: base64 of exactly DG_GOSSIP_KEY_LEN bytes. Returns 0, or
 * DG_EINVAL with a message in err ("not valid base64", "must be 32 bytes, got 16"). */
int dg_gossip_key_parse(const char *text, uint8_t key[DG_GOSSIP_KEY_LEN], char *err,
			size_t errlen);
/* A new random key in Consul's form (44 base64 characters and a NUL) into out (>= 45 bytes),
 * what `dcgate keygen` prints. 0, DG_EIO (no randomness) or DG_ETOOBIG (out too small). */
int dg_gossip_key_generate(char *out, size_t outlen);
/* Appends the encrypted form of plain[0..len) to out (DG_GOSSIP_SEAL_OVERHEAD bytes longer).
 * 0, DG_EIO (OpenSSL failed) or DG_ENOMEM; on failure out is left as it was. */
int dg_gossip_seal(const uint8_t key[DG_GOSSIP_KEY_LEN], const void *plain, size_t len,
		   struct dg_buf *out);
/* Decrypts a sealed packet into out (room for len - DG_GOSSIP_SEAL_OVERHEAD bytes; out may not
 * overlap buf) and sets *outlen. 0, or DG_EPERM when the packet is not a sealed packet of ours
 * or fails authentication (wrong key, tampered): the caller drops and counts it. */
int dg_gossip_open(const uint8_t key[DG_GOSSIP_KEY_LEN], const void *buf, size_t len,
		   uint8_t *out, size_t *outlen);

#endif
