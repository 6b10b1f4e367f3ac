/* /v1/event: user events (consul-api.md §11). In a single-server datacenter the server is the
 * only agent, so firing an event delivers it here: if its filters match this agent it goes into
 * the agent's buffer of the latest 256, which /v1/event/list reads, oldest first. Nothing goes
 * through raft: events are gossip in Consul, not replicated state, and are lost on restart.
 *
 * Threads: handlers run on MHD's threads (HTTP and HTTPS daemons each have one), so the buffer
 * sits under its own mutex. Lock order: the buffer's lock, then the server's waiter lock
 * (event_list parks with the buffer locked); fire takes the catalog's read lock on its own. */
#include "http/internal.h"

#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DG_EVENT_BUFFER	    256 /* Consul's agent keeps the 256 latest events */
#define DG_EVENT_SIZE_LIMIT 512 /* serf's UserEventSizeLimit default, on the encoded event */
#define DG_EVENT_PREFIX	    "consul:event:" /* Consul's serf name for a user event */
/* Filter regexes are checked for cost by dg_regex_check (common/regex.c) before regcomp. */

/* The agent's event buffer. One per process: cmd/main.c runs one agent with one HTTP server. */
static struct {
	pthread_mutex_t mu;
	json_t *ev[DG_EVENT_BUFFER]; /* UserEvent objects, owned; never handed out, only copied */
	size_t head;		     /* the oldest */
	size_t count;
	uint64_t ltime; /* serf's event clock: the next event's LTime (serf starts it at 1) */
} buffer = {.mu = PTHREAD_MUTEX_INITIALIZER, .ltime = 1};

static json_t *buffer_at(size_t i)
{
	return buffer.ev[(buffer.head + i) % DG_EVENT_BUFFER];
}

static const char *ev_str(json_t *ev, const char *field)
{
	return json_string_value(json_object_get(ev, field));
}

/* Takes ev; the oldest event makes room when the buffer is full. Buffer lock held. */
static void buffer_add_locked(json_t *ev)
{
	if (buffer.count == DG_EVENT_BUFFER) {
		json_decref(buffer.ev[buffer.head]);
		buffer.ev[buffer.head] = ev;
		buffer.head = (buffer.head + 1) % DG_EVENT_BUFFER;
		return;
	}
	buffer.ev[(buffer.head + buffer.count) % DG_EVENT_BUFFER] = ev;
	buffer.count++;
}

/* Consul's uuidToUint64: the first 16 hex digits of the ID (dashes removed) XOR the last 16. A
 * result of 0 is sent as 1, as Consul's setIndex does, and compared as sent. */
static uint64_t id_index(const char *id)
{
	uint64_t half[2] = {0, 0};
	size_t n = 0;
	for (const char *p = id ? id : ""; *p && n < 32; p++) {
		int d = *p >= '0' && *p <= '9'	 ? *p - '0'
			: *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
			: *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
						 : -1;
		if (d < 0)
			continue; /* the dashes */
		half[n / 16] = half[n / 16] << 4 | (uint64_t)d;
		n++;
	}
	uint64_t v = n == 32 ? half[0] ^ half[1] : 0;
	return v ? v : 1;
}

/* ---- PUT /v1/event/fire/:name ---- */

/* Bytes of a msgpack string or byte-slice header as Consul and serf write them (go-msgpack
 * without WriteExt: the old raw type, so no str8), and of an unsigned integer. */
static size_t mp_raw(size_t n)
{
	return (n < 32 ? 1 : n < 65536 ? 3 : 5) + n;
}

static size_t mp_uint(uint64_t v)
{
	return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= 0xffffffffu ? 5 : 9;
}

/* Size of the event as Consul encodes it (structs.UserEvent with its short codec names, empty
 * Payload and filters omitted), and of serf's message around it (a type byte, then
 * {LTime, Name: "consul:event:<name>", Payload: the encoded event, CC}). serf refuses the
 * event when name plus payload (*before) or the whole message (*after) exceed its limit. */
static void encoded_size(const char *name, size_t payload, const char *nf, const char *sf,
			 const char *tf, uint64_t ltime, size_t *before, size_t *after)
{
	size_t inner =
	    1 + mp_raw(2) + mp_raw(36) + mp_raw(1) + mp_raw(strlen(name)) + mp_raw(1) + 1;
	if (payload)
		inner += mp_raw(1) + mp_raw(payload);
	const char *filters[] = {nf, sf, tf};
	for (size_t i = 0; i < 3; i++)
		if (*filters[i])
			inner += mp_raw(2) + mp_raw(strlen(filters[i]));
	size_t serf_name = strlen(DG_EVENT_PREFIX) + strlen(name);
	*before = serf_name + inner;
	*after = 1 + 1 + mp_raw(5) + mp_uint(ltime) + mp_raw(4) + mp_raw(serf_name) + mp_raw(7) +
		 mp_raw(inner) + mp_raw(2) + 1;
}

/* The event's filters, compiled (POSIX extended regexes standing in for Go's RE2; both search
 * unanchored). An empty filter is none. */
struct filters {
	const char *text[3]; /* node, service, tag; "" when absent */
	regex_t re[3];
	bool compiled[3];
};

static void filters_fini(struct filters *f)
{
	for (size_t i = 0; i < 3; i++)
		if (f->compiled[i])
			regfree(&f->re[i]);
}

/* Consul's validateUserEventParams. Returns 0, or DG_EINVAL with Consul's text in err. */
static int filters_compile(struct filters *f, char *err, size_t len)
{
	static const char *const what[] = {"node", "service", "tag"};
	if (*f->text[2] && !*f->text[1]) {
		snprintf(err, len, "Cannot provide tag filter without service filter");
		return DG_EINVAL;
	}
	for (size_t i = 0; i < 3; i++) {
		const char *why = "";
		if (!*f->text[i])
			continue;
		if (dg_regex_check(f->text[i], &why) != 0) {
			snprintf(err, len, "Invalid %s filter: error parsing regexp: %s", what[i],
				 why);
			return DG_EINVAL;
		}
		int rc = regcomp(&f->re[i], f->text[i], REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			char text[128];
			regerror(rc, &f->re[i], text, sizeof(text));
			snprintf(err, len, "Invalid %s filter: %s", what[i], text);
			return DG_EINVAL;
		}
		f->compiled[i] = true;
	}
	return 0;
}

struct service_match {
	const struct filters *f;
	bool found;
};

/* Consul's shouldProcessUserEvent walks the agent's services by ID; the name is tried too, since
 * the filter is documented as matching the service name (the two are usually the same). */
static int match_service(void *arg, const struct dg_cat_service *s)
{
	struct service_match *m = arg;
	const struct filters *f = m->f;
	if (!s->agent || (regexec(&f->re[1], s->id, 0, NULL, 0) != 0 &&
			  regexec(&f->re[1], s->name, 0, NULL, 0) != 0))
		return 0;
	if (!f->compiled[2]) {
		m->found = true;
		return 1;
	}
	size_t i;
	json_t *t;
	json_array_foreach(s->tags, i, t)
	{
		if (json_is_string(t) &&
		    regexec(&f->re[2], json_string_value(t), 0, NULL, 0) == 0) {
			m->found = true;
			return 1;
		}
	}
	return 0;
}

/* True if this agent would record the event: its node name matches the node filter, and one of
 * its own services (those of /v1/agent/services) the service filter and, if given, one of that
 * service's tags the tag filter. */
static bool filters_match(struct dg_req *r, const struct filters *f)
{
	if (f->compiled[0] && regexec(&f->re[0], dg_http_node(r), 0, NULL, 0) != 0)
		return false;
	if (!f->compiled[1])
		return true;
	struct service_match m = {.f = f, .found = false};
	dg_catalog *cat = dg_http_cat(r);
	dg_cat_rdlock(cat);
	dg_cat_node_services_walk_locked(cat, dg_http_node(r), match_service, &m);
	dg_cat_unlock(cat);
	return m.found;
}

static const char *query_value(struct dg_req *r, const char *name)
{
	const char *v = "";
	dg_req_arg_present(r, name, &v);
	return v;
}

/* The UserEvent of consul-api.md §2: a new reference, NULL when out of memory. */
static json_t *enc_event(const char *id, const char *name, const struct dg_buf *payload,
			 const struct filters *f, uint64_t ltime)
{
	json_t *p = json_null();
	if (payload->len) {
		char *b64 = dg_base64_encode(payload->data, payload->len);
		p = b64 ? json_string(b64) : NULL;
		free(b64);
	}
	return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:i, s:I}", "ID", id, "Name", name,
			 "Payload", p, "NodeFilter", f->text[0], "ServiceFilter", f->text[1],
			 "TagFilter", f->text[2], "Version", 1, "LTime", (json_int_t)ltime);
}

/* Answers with the event as fired, LTime 0 as Consul's does (the Lamport time is set by the
 * gossip layer; the recorded copy carries it). Validation errors are 500 with Consul's texts,
 * as Consul answers any error of its agent's UserEvent; an event too large is 400 here (Consul:
 * 500 too) so that clients see it as their request's fault. */
static int event_fire(struct dg_req *r)
{
	const char *name = r->arg;
	char err[256], id[37];
	struct filters f = {
	    .text = {query_value(r, "node"), query_value(r, "service"), query_value(r, "tag")}};
	if (!*name)
		return dg_reply_text(r, 400, "Missing name", 0);
	if (filters_compile(&f, err, sizeof(err)) != 0) {
		filters_fini(&f);
		return dg_reply_text(r, 500, err, 0);
	}

	pthread_mutex_lock(&buffer.mu);
	uint64_t ltime = buffer.ltime;
	size_t before, after;
	encoded_size(name, r->body.len, f.text[0], f.text[1], f.text[2], ltime, &before, &after);
	if (before > DG_EVENT_SIZE_LIMIT || after > DG_EVENT_SIZE_LIMIT) {
		pthread_mutex_unlock(&buffer.mu);
		filters_fini(&f);
		return dg_reply_textf(r, 400, 0,
				      before > DG_EVENT_SIZE_LIMIT
					  ? "user event exceeds configured limit of %d bytes "
					    "before encoding"
					  : "encoded user event exceeds configured limit of %d "
					    "bytes after encoding",
				      DG_EVENT_SIZE_LIMIT);
	}
	buffer.ltime++; /* serf ticks its clock for every event it sends */
	pthread_mutex_unlock(&buffer.mu);

	dg_uuid_new(id);
	json_t *fired = enc_event(id, name, &r->body, &f, 0);
	json_t *kept = NULL;
	bool recorded = false;
	if (fired && filters_match(r, &f) && (kept = json_deep_copy(fired)) &&
	    json_object_set_new(kept, "LTime", json_integer((json_int_t)ltime)) == 0) {
		pthread_mutex_lock(&buffer.mu);
		buffer_add_locked(kept);
		pthread_mutex_unlock(&buffer.mu);
		kept = NULL;
		recorded = true;
	}
	json_decref(kept);
	filters_fini(&f);
	if (!fired)
		return dg_reply_text(r, 500, "out of memory", 0);
	if (recorded)
		dg_http_wake(r->srv, DG_HTTP_TOPIC_EVENTS);
	return dg_reply_json(r, 200, fired, 0);
}

/* ---- GET /v1/event/list ---- */

/* The index of the newest event named name (NULL or "": any), 1 when there is none. Buffer lock
 * held. */
static uint64_t list_index_locked(const char *name)
{
	for (size_t i = buffer.count; i-- > 0;) {
		json_t *ev = buffer_at(i);
		if (!name || !*name || strcmp(ev_str(ev, "Name"), name) == 0)
			return id_index(ev_str(ev, "ID"));
	}
	return 1;
}

/* Blocks while the index equals ?index (it is not monotonic: any other value is news). The
 * buffer lock is held from reading the index until the request is parked, and fire records an
 * event under that lock before it wakes the parked reads, so no event can slip in between. */
static int event_list(struct dg_req *r)
{
	const char *name = query_value(r, "name");
	pthread_mutex_lock(&buffer.mu);
	uint64_t index = list_index_locked(name);
	/* result index 0: never "past" ?index, so only the deadline decides */
	if (r->q.index && index == r->q.index && dg_req_should_block(r, 0)) {
		int rv = dg_req_block(r, DG_HTTP_TOPIC_EVENTS, NULL, false,
				      dg_cat_last_index(dg_http_cat(r)));
		pthread_mutex_unlock(&buffer.mu);
		return rv;
	}
	json_t *out = json_array();
	for (size_t i = 0; out && i < buffer.count; i++) {
		json_t *ev = buffer_at(i);
		if (*name && strcmp(ev_str(ev, "Name"), name) != 0)
			continue;
		json_t *copy = json_deep_copy(ev);
		if (!copy || json_array_append_new(out, copy) != 0) {
			json_decref(out);
			out = NULL;
		}
	}
	pthread_mutex_unlock(&buffer.mu);
	if (!out)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json(r, 200, out, index);
}

/* fire is also listed without its slash so that an empty name gets Consul's 400. */
const struct dg_route dg_routes_event[] = {
    {"/v1/event/fire/", true, DG_PUT, event_fire},
    {"/v1/event/fire", false, DG_PUT, event_fire},
    {"/v1/event/list", false, DG_GET, event_list},
    {NULL, false, 0, NULL},
};
