/* wan/msg.h: the messages servers exchange on port 8302, and their codec. Pure: bytes in, bytes
 * out, no sockets, so the decoder can be fuzzed alone (tests/fuzz/fuzz_wan_msg.c).
 *
 * Wire form of one message (one nng message on a req/rep link):
 *   byte 0      0xD6, the magic of dcgate's WAN protocol version 1
 *   byte 1      the type (enum dg_wan_type)
 *   bytes 2..5  H, the length of the header, big-endian, at most DG_WAN_MAX_HEADER
 *   H bytes     the header: one JSON object (depth at most 8), fields per type below
 *   the rest    the body: bytes whose meaning depends on the type (may be empty)
 * The whole message is at most DG_WAN_MAX_MSG bytes.
 *
 * Types, their header fields and body (every request is answered on the same req/rep context):
 *   PING       {"From":"<node>.<dc>","Inc":n}                     -> PONG {"From":..,"Inc":n}
 *   PUSHPULL   {"From":..} body = JSON array of members (below)    -> PUSHPULL with the
 *              receiver's members: the two views are merged by both sides
 *   LEAVE      {"Name":"<node>.<dc>","Inc":n}                      -> ACK {}
 *   INDIRECT   {"Target":"<node>.<dc>","Addr":"host:port","TimeoutMs":n} -> ACK {"Ok":true|false}
 *   HTTP       {"Method":"GET","Path":"/v1/..?..","Headers":{"X-Consul-Token":".."}} body =
 *              the request body                                    -> HTTP_REPLY
 *   HTTP_REPLY {"Status":200,"Headers":{"X-Consul-Index":"12",..}} body = the response body
 *   ERROR      {"Error":"text"}: the request could not be served (any request may get it)
 *   BATCH      {"Count":n} body = n items (1..DG_WAN_MAX_BATCH), each a 4-byte big-endian length
 *              then one whole HTTP message as above                -> BATCH_REPLY (or ERROR
 *              for the whole batch)
 *   BATCH_REPLY {"Count":n} body = n items in the order asked, framed the same way, each an
 *              HTTP_REPLY or an ERROR. An ERROR with "Resend":true says the answer did not fit
 *              in this batch's reply: the requester asks again with that request alone. Only
 *              non-blocking reads travel in batches (wan/wan.c), so asking again is safe.
 * A member in a PUSHPULL body: {"Name":"s1.east","Node":"s1","Datacenter":"east",
 *   "Addr":"127.0.0.2","Port":8302,"Status":1,"Inc":3,"Build":"0.3.0"} (Status: 1 alive,
 *   2 leaving, 3 left, 4 failed, 5 suspect). */
#ifndef DG_WAN_MSG_H
#define DG_WAN_MSG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define DG_WAN_MAGIC 0xD6

enum dg_wan_type {
	DG_WAN_PING = 1,
	DG_WAN_PONG = 2,
	DG_WAN_PUSHPULL = 3,
	DG_WAN_LEAVE = 4,
	DG_WAN_ACK = 5,
	DG_WAN_INDIRECT = 6,
	DG_WAN_HTTP = 7,
	DG_WAN_HTTP_REPLY = 8,
	DG_WAN_ERROR = 9,
	DG_WAN_BATCH = 10,
	DG_WAN_BATCH_REPLY = 11,
};

/* Items in one BATCH or BATCH_REPLY: enough to carry every request of a busy peer in one
 * message (the requester sends what waited while its batches were in flight), few enough that
 * the answer of one batch (each answer up to a KV value's size) is not held up long. */
#define DG_WAN_MAX_BATCH 64

/* A decoded message; body points into the buffer given to the decoder. */
struct dg_wan_msg {
	enum dg_wan_type type;
	json_t *hdr; /* a JSON object, owned by the message */
	const uint8_t *body;
	size_t body_len;
};

/* Appends the wire form of a message to out. hdr may be NULL (an empty object). Returns 0,
 * DG_EINVAL (unknown type, hdr not an object, deeper than 8 or with "\u0000" in a string or key,
 * which the decoder refuses; body NULL with body_len > 0), DG_ETOOBIG (header or message over the
 * limits) or DG_ENOMEM. On failure out is left as it was. */
int dg_wan_msg_encode(struct dg_buf *out, enum dg_wan_type type, json_t *hdr, const void *body,
		      size_t body_len);
/* Decodes buf. Returns 0, or DG_EINVAL / DG_ETOOBIG with a reason in err (for the log line
 * that closes the link): bad magic, unknown type, truncated, header too long (DG_ETOOBIG), header
 * not a JSON object (or with duplicate keys, or "\u0000" in a string), JSON too deep, message
 * over DG_WAN_MAX_MSG (DG_ETOOBIG). On failure out->hdr is NULL, so dg_wan_msg_fini is safe. */
int dg_wan_msg_decode(const void *buf, size_t len, struct dg_wan_msg *out, char *err,
		      size_t errlen);
void dg_wan_msg_fini(struct dg_wan_msg *m);
/* The type's name for logs ("PING", ...; "unknown" otherwise). */
const char *dg_wan_type_name(int type);

/* ---- batches ---- */

/* A batch being built: the framed items of a BATCH or BATCH_REPLY body. Caller storage. */
struct dg_wan_batch {
	enum dg_wan_type type; /* DG_WAN_BATCH or DG_WAN_BATCH_REPLY */
	struct dg_buf body;
	size_t count;
	size_t max; /* the whole message's limit: DG_WAN_MAX_MSG (tests lower it) */
};
/* type is DG_WAN_BATCH or DG_WAN_BATCH_REPLY; max at most DG_WAN_MAX_MSG. */
void dg_wan_batch_init(struct dg_wan_batch *b, enum dg_wan_type type, size_t max);
void dg_wan_batch_fini(struct dg_wan_batch *b);
/* The largest item that may still be added (0 when full). */
size_t dg_wan_batch_room(const struct dg_wan_batch *b);
/* Appends one item, a whole encoded message (dg_wan_msg_encode) of a type the batch may carry:
 * HTTP in a BATCH, HTTP_REPLY or ERROR in a BATCH_REPLY. 0, DG_ETOOBIG (no room: over max, or
 * DG_WAN_MAX_BATCH items already), DG_EINVAL (not a message of an allowed type), DG_ENOMEM.
 * On failure the batch is left as it was. */
int dg_wan_batch_add(struct dg_wan_batch *b, const void *item, size_t len);
/* Appends the whole message (at least one item) to out. 0, DG_EINVAL (empty), DG_ENOMEM. */
int dg_wan_batch_encode(const struct dg_wan_batch *b, struct dg_buf *out);
/* The items of a decoded BATCH or BATCH_REPLY, checked: Count in 1..DG_WAN_MAX_BATCH and equal
 * to the items found, each framed within the body, each a message that decodes and is of a type
 * the batch may carry. *items is a new array of *n messages whose bodies point into m's body
 * (free with dg_wan_batch_items_free, before m's buffer goes). DG_EINVAL / DG_ETOOBIG with the
 * reason in err, *items NULL. */
int dg_wan_batch_decode(const struct dg_wan_msg *m, struct dg_wan_msg **items, size_t *n,
			char *err, size_t errlen);
void dg_wan_batch_items_free(struct dg_wan_msg *items, size_t n);
/* A BATCH_REPLY of the n answers (each a whole encoded HTTP_REPLY or ERROR), appended to out,
 * at most max bytes (DG_WAN_MAX_MSG; tests lower it): answers are taken in order while they fit
 * with room left for a resend marker for each one after them; an answer that does not fit is
 * replaced by the marker (an ERROR with "Resend":true), so the requester asks for it alone.
 * *resends counts the markers. 0, DG_ETOOBIG (not even the markers fit), DG_EINVAL, DG_ENOMEM;
 * on failure out is left as it was. */
int dg_wan_batch_reply_encode(struct dg_buf *out, const struct dg_buf *answers, size_t n,
			      size_t max, size_t *resends);
/* True if m is the resend marker of a BATCH_REPLY item. */
bool dg_wan_is_resend(const struct dg_wan_msg *m);

/* One member of the WAN pool as it travels in a PUSHPULL body. */
#define DG_WAN_NAME_MAX 256 /* "<node>.<dc>" */
#define DG_WAN_LABEL_MAX 128
struct dg_wan_wire_member {
	char name[DG_WAN_NAME_MAX];
	char node[DG_WAN_LABEL_MAX];
	char dc[DG_WAN_LABEL_MAX];
	char addr[64]; /* IPv4/IPv6 literal or host name, no port */
	int port;
	int status; /* 1..5 as above */
	uint64_t inc;
	char build[32];
};
/* Parses a PUSHPULL body (a JSON array of members, at most DG_WAN_MAX_MEMBERS) into a new array
 * (*out, caller frees; never NULL on success, even when *n is 0) of *n members. Entries that are
 * malformed (missing or over-long fields, empty or non-printable-ASCII labels, a Datacenter with
 * a dot, Name not "<Node>.<Datacenter>", a port outside 1..65535, an unknown Status, a negative
 * Inc) make the whole body invalid: DG_EINVAL with the reason in err; more than
 * DG_WAN_MAX_MEMBERS is DG_ETOOBIG. Fields not listed above are ignored. */
int dg_wan_members_decode(const uint8_t *body, size_t len, struct dg_wan_wire_member **out,
			  size_t *n, char *err, size_t errlen);
/* The JSON text of members for a PUSHPULL body, appended to out. 0, DG_ETOOBIG (n over
 * DG_WAN_MAX_MEMBERS), DG_EINVAL (a member the decoder would refuse, or Inc over INT64_MAX) or
 * DG_ENOMEM; on failure out is left as it was. */
int dg_wan_members_encode(struct dg_buf *out, const struct dg_wan_wire_member *m, size_t n);

#endif
