/* Fuzz target: the LAN gossip packet decoder (lan/gossip_msg.c). Each input is decoded twice,
 * as a datagram and as a stream packet. A refusal must come with a reason and leave nothing
 * allocated; whatever decodes must stay within the limits and encode again to exactly the
 * input bytes (the format has one encoding per value), and that encoding must decode again.
 * Sealed packets in the corpus exercise the "encrypted, no key" refusal; opening them needs
 * libcrypto, which the libFuzzer build does not link (the unit tests cover it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lan/gossip_msg.h"

static void check(const uint8_t *data, size_t size, bool stream)
{
	struct dg_gossip_packet p;
	char err[160] = "";
	int rv = dg_gossip_packet_decode(data, size, stream, &p, err, sizeof(err));
	if (rv != 0) {
		if (!err[0] || p.n != 0 || p.mem != NULL)
			abort();
		dg_gossip_packet_fini(&p);
		return;
	}
	if (p.n == 0 || p.n > DG_GOSSIP_MAX_COMPOUND || (stream && p.n != 1))
		abort();
	for (size_t i = 0; i < p.n; i++) {
		const struct dg_gossip_msg *m = &p.msg[i];
		if ((m->type == DG_GOSSIP_PUSHPULL) != stream)
			abort();
		if (m->nmembers > DG_GOSSIP_MAX_MEMBERS)
			abort();
		for (size_t j = 0; j < m->nmembers; j++)
			if (m->members[j].ntags > DG_GOSSIP_MAX_TAGS ||
			    strlen(m->members[j].name) > DG_GOSSIP_NAME_MAX)
				abort();
	}
	struct dg_buf enc;
	dg_buf_init(&enc);
	if (dg_gossip_packet_encode(&enc, p.msg, p.n,
				    stream ? DG_GOSSIP_STREAM_MAX : DG_GOSSIP_UDP_MAX) != 0 ||
	    enc.len != size || memcmp(enc.data, data, size) != 0)
		abort();
	struct dg_gossip_packet p2;
	if (dg_gossip_packet_decode(enc.data, enc.len, stream, &p2, err, sizeof(err)) != 0 ||
	    p2.n != p.n)
		abort();
	dg_gossip_packet_fini(&p2);
	dg_buf_fini(&enc);
	dg_gossip_packet_fini(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check(data, size, false);
	check(data, size, true);
	return 0;
}
