/* tls/frames.c: the SP message boundary scanner of tls/frames.h. */
#include "tls/frames.h"

#include <string.h>

static const uint8_t sp_magic[4] = {0x00, 'S', 'P', 0x00};

size_t dg_sp_frames_scan(struct dg_sp_frames *f, const uint8_t *buf, size_t n, bool *ends)
{
	*ends = false;
	if (n == 0)
		return 0;
	if (f->mode == DG_SP_UNKNOWN) {
		/* nng sends the connection header in one piece, so its first four bytes are here */
		if (n >= sizeof(sp_magic) && memcmp(buf, sp_magic, sizeof(sp_magic)) == 0) {
			f->mode = DG_SP_FRAMED;
			f->header_left = DG_SP_HEADER_LEN;
		} else {
			f->mode = DG_SP_RAW;
		}
	}
	if (f->mode == DG_SP_RAW) {
		*ends = true;
		return n;
	}
	if (f->header_left > 0) {
		size_t take = n < f->header_left ? n : f->header_left;
		f->header_left -= (unsigned)take;
		*ends = f->header_left == 0;
		return take;
	}
	size_t used = 0;
	while (f->len_have < sizeof(f->len_buf) && used < n)
		f->len_buf[f->len_have++] = buf[used++];
	if (f->len_have < sizeof(f->len_buf))
		return used; /* the prefix goes on in the next piece */
	if (used > 0) {	     /* the prefix completed in this call: the body's length is known */
		uint64_t len = 0;
		for (size_t i = 0; i < sizeof(f->len_buf); i++)
			len = (len << 8) | f->len_buf[i];
		f->body_left = len;
	}
	size_t room = n - used;
	size_t take = f->body_left < room ? (size_t)f->body_left : room;
	f->body_left -= take;
	used += take;
	if (f->body_left == 0) {
		f->len_have = 0; /* the next byte starts the next message's prefix */
		*ends = true;
	}
	return used;
}
