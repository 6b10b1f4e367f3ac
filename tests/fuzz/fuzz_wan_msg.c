/* Fuzz target: the WAN message codec (wan/msg.c). The input is decoded as a message and, for a
 * PUSHPULL, its body as members. A refusal must come with a reason; whatever decodes must encode
 * again, decode to the same value, and encode to the same bytes the second time. */
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
