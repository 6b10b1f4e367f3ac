/* tls/frames.h: where the messages of nng's SP protocols end in an outgoing byte stream.
 *
 * nng's TLS layer hands the engine each piece of a message separately (the 8-byte length, the
 * protocol header, the body), one call and one worker-thread hop apart. Sealing each piece at
 * once costs a TLS record, a TCP segment and, on the receiving side, a wake-up per piece. The
 * engine instead collects a message's pieces and seals the whole message as one record; this
 * scanner tells it where a message ends.
 *
 * An SP stream begins with an 8-byte connection header ("\0SP\0", protocol, reserved), then
 * carries messages, each a 64-bit big-endian length and that many bytes. A stream that does not
 * begin with "\0SP\0" is some other protocol: every write is then its own unit, as before. */
#ifndef DG_TLS_FRAMES_H
#define DG_TLS_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DG_SP_HEADER_LEN 8

enum dg_sp_mode { DG_SP_UNKNOWN = 0, DG_SP_FRAMED, DG_SP_RAW };

struct dg_sp_frames {
	enum dg_sp_mode mode;
	unsigned header_left; /* bytes of the connection header still to come */
	unsigned len_have;    /* bytes of the current message's length prefix seen so far */
	uint8_t len_buf[8];
	uint64_t body_left; /* bytes of the current message after its prefix still to come */
};

/* Scans buf[0..n), the next bytes of the stream, and returns how many of them belong to the
 * current unit, up to and including its end: *ends says whether they end it (the connection
 * header, or a message). The first call decides the mode; in DG_SP_RAW every call is a unit of
 * its own (returns n, *ends true). n == 0 returns 0 with *ends false. */
size_t dg_sp_frames_scan(struct dg_sp_frames *f, const uint8_t *buf, size_t n, bool *ends);

#endif
