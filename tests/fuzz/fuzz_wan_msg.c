/* Fuzz target: the WAN message codec (wan/msg.c). The input is decoded as a message and, for a
 * PUSHPULL, its body as members, for a BATCH or BATCH_REPLY, its items. A refusal must come with
 * a reason; whatever decodes must encode again, decode to the same value, and encode to the same
 * bytes the second time. The items of a BATCH_REPLY also go through the reply encoder, whose
 * output must decode with one item (an answer or a resend marker) per answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wan/msg.h"

static void check_members(const uint8_t *body, size_t len)
{
	struct dg_wan_wire_member *v = NULL, *w = NULL;
	size_t n = 0, n2 = 0;
	char err[256] = "";
	int rv = dg_wan_members_decode(body, len, &v, &n, err, sizeof(err));
	if (rv != 0) {
		if (!err[0] || v || n)
			abort();
		return;
	}
	if (!v || n > DG_WAN_MAX_MEMBERS)
		abort();

	struct dg_buf enc;
	dg_buf_init(&enc);
	/* what the decoder accepted, the encoder must accept */
	if (dg_wan_members_encode(&enc, v, n) != 0)
		abort();
	if (dg_wan_members_decode((const uint8_t *)enc.data, enc.len, &w, &n2, err, sizeof(err)) !=
		0 ||
	    n2 != n)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].name, w[i].name) || strcmp(v[i].node, w[i].node) ||
		    strcmp(v[i].dc, w[i].dc) || strcmp(v[i].addr, w[i].addr) ||
		    v[i].port != w[i].port || v[i].status != w[i].status || v[i].inc != w[i].inc ||
		    strcmp(v[i].build, w[i].build))
			abort();
	}
	struct dg_buf enc2;
	dg_buf_init(&enc2);
	if (dg_wan_members_encode(&enc2, w, n2) != 0 || enc2.len != enc.len ||
	    memcmp(enc2.data, enc.data, enc.len) != 0)
		abort();
	dg_buf_fini(&enc2);
	dg_buf_fini(&enc);
	free(w);
	free(v);
}

/* items: a decoded batch's; rebuilds the batch from each item encoded again and checks it
 * decodes to the same items. */
static void check_batch_round_trip(const struct dg_wan_msg *m, const struct dg_wan_msg *items,
				   size_t n)
{
	struct dg_wan_batch b;
	dg_wan_batch_init(&b, m->type, DG_WAN_MAX_MSG);
	struct dg_buf answers[DG_WAN_MAX_BATCH];
	size_t nanswers = 0;
	for (size_t i = 0; i < n; i++) {
		struct dg_buf one;
		dg_buf_init(&one);
		int rv = dg_wan_msg_encode(&one, items[i].type, items[i].hdr, items[i].body,
					   items[i].body_len);
		if (rv == 0)
			rv = dg_wan_batch_add(&b, one.data, one.len);
		if (rv == 0 && m->type == DG_WAN_BATCH_REPLY)
			answers[nanswers++] = one;
		else
			dg_buf_fini(&one);
		if (rv == DG_ETOOBIG)
			goto out; /* a compact dump may be longer than its input, as for a header */
		if (rv != 0)
			abort();
	}
	struct dg_buf enc;
	dg_buf_init(&enc);
	struct dg_wan_msg m2, *items2 = NULL;
	size_t n2 = 0;
	char err[256] = "";
	if (dg_wan_batch_encode(&b, &enc) != 0 ||
	    dg_wan_msg_decode(enc.data, enc.len, &m2, err, sizeof(err)) != 0)
		abort();
	if (dg_wan_batch_decode(&m2, &items2, &n2, err, sizeof(err)) != 0 || n2 != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (items2[i].type != items[i].type || !json_equal(items2[i].hdr, items[i].hdr) ||
		    items2[i].body_len != items[i].body_len ||
		    (items[i].body_len &&
		     memcmp(items2[i].body, items[i].body, items[i].body_len) != 0))
			abort();
	dg_wan_batch_items_free(items2, n2);
	dg_wan_msg_fini(&m2);
	dg_buf_fini(&enc);
	if (nanswers == n && n > 0) {
		/* the reply encoder, with a limit small enough that some become markers */
		size_t resends = 0;
		dg_buf_init(&enc);
		size_t max = m->body_len / 2 + 200;
		int rv = dg_wan_batch_reply_encode(&enc, answers, n, max, &resends);
		if (rv == 0) {
			if (enc.len > max || resends > n ||
			    dg_wan_msg_decode(enc.data, enc.len, &m2, err, sizeof(err)) != 0 ||
			    dg_wan_batch_decode(&m2, &items2, &n2, err, sizeof(err)) != 0 || n2 != n)
				abort();
			/* each answer comes back as it was, or as a marker (counted) */
			size_t markers = 0;
			for (size_t i = 0; i < n; i++) {
				if (items2[i].type == items[i].type &&
				    json_equal(items2[i].hdr, items[i].hdr) &&
				    items2[i].body_len == items[i].body_len &&
				    (!items[i].body_len || memcmp(items2[i].body, items[i].body,
								   items[i].body_len) == 0))
					continue;
				if (!dg_wan_is_resend(&items2[i]))
					abort();
				markers++;
			}
			if (markers > resends)
				abort();
			dg_wan_batch_items_free(items2, n2);
			dg_wan_msg_fini(&m2);
		} else if (rv != DG_ETOOBIG) {
			abort();
		}
		dg_buf_fini(&enc);
	}
out:
	for (size_t i = 0; i < nanswers; i++)
		dg_buf_fini(&answers[i]);
	dg_wan_batch_fini(&b);
}

static void check_batch(const struct dg_wan_msg *m, const uint8_t *data, size_t size)
{
	struct dg_wan_msg *items = NULL;
	size_t n = 0;
	char err[256] = "";
	int rv = dg_wan_batch_decode(m, &items, &n, err, sizeof(err));
	if (rv != 0) {
		if ((rv != DG_EINVAL && rv != DG_ETOOBIG) || !err[0] || items || n)
			abort();
		return;
	}
	if (!items || n < 1 || n > DG_WAN_MAX_BATCH ||
	    (json_int_t)n != json_integer_value(json_object_get(m->hdr, "Count")))
		abort();
	for (size_t i = 0; i < n; i++)
		if (!json_is_object(items[i].hdr) || items[i].body < data ||
		    items[i].body + items[i].body_len > data + size)
			abort();
	check_batch_round_trip(m, items, n);
	dg_wan_batch_items_free(items, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dg_wan_msg m;
	char err[256] = "";
	int rv = dg_wan_msg_decode(data, size, &m, err, sizeof(err));
	if (rv != 0) {
		if ((rv != DG_EINVAL && rv != DG_ETOOBIG) || !err[0] || m.hdr)
			abort();
		return 0;
	}
	if (!json_is_object(m.hdr) || m.body < data || m.body + m.body_len != data + size)
		abort();
	if (m.type == DG_WAN_PUSHPULL)
		check_members(m.body, m.body_len);
	if (m.type == DG_WAN_BATCH || m.type == DG_WAN_BATCH_REPLY)
		check_batch(&m, data, size);

	struct dg_buf enc;
	dg_buf_init(&enc);
	rv = dg_wan_msg_encode(&enc, m.type, m.hdr, m.body, m.body_len);
	if (rv == DG_ETOOBIG) {
		/* the compact dump may be longer than the input ("1e9" is "1000000000.0"), so a
		 * header near DG_WAN_MAX_HEADER may not fit again; nothing else may make it fail */
		dg_buf_fini(&enc);
		dg_wan_msg_fini(&m);
		return 0;
	}
	if (rv != 0)
		abort();
	struct dg_wan_msg m2;
	if (dg_wan_msg_decode(enc.data, enc.len, &m2, err, sizeof(err)) != 0)
		abort();
	if (m2.type != m.type || !json_equal(m2.hdr, m.hdr) || m2.body_len != m.body_len ||
	    (m.body_len && memcmp(m2.body, m.body, m.body_len) != 0))
		abort();
	struct dg_buf enc2;
	dg_buf_init(&enc2);
	if (dg_wan_msg_encode(&enc2, m2.type, m2.hdr, m2.body, m2.body_len) != 0 ||
	    enc2.len != enc.len || memcmp(enc2.data, enc.data, enc.len) != 0)
		abort();
	dg_buf_fini(&enc2);
	dg_wan_msg_fini(&m2);
	dg_buf_fini(&enc);
	dg_wan_msg_fini(&m);
	return 0;
}
