/* model*.c: the supervisor's side of each model, called the way the
 * supervisor calls it — through the table model_get() returns — against a
 * scoreboard and a pool made here. The pool's workers are channel ends the
 * test holds; no process is started. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "children.h"
#include "config.h"
#include "fdpass.h"
#include "kept.h"
#include "ledger.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "scoreboard.h"

#define WORKERS 2
#define MAX_CONNECTIONS 4

struct fixture {
	struct scoreboard sb;
	struct config config;
	struct listen_set sockets;
	struct pool_env env;
	struct pool *pool;
	struct children children;
	struct held held;
	int worker_end[WORKERS]; /* what each "worker" reads its channel from */
	/* What each read from its channel and did not look at yet, and how
	 * many messages brought it. */
	enum fdpass_tag unread[WORKERS][FDPASS_BATCH];
	unsigned n_unread[WORKERS], next_unread[WORKERS], messages[WORKERS];
	struct model_ctx m;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || scoreboard_new(&f->sb, WORKERS + 1, MAX_CONNECTIONS, NULL) < 0)
		return -1;
	config_init(&f->config);
	f->config.workers = WORKERS;
	f->config.worker_connections = 3;
	f->config.max_connections = MAX_CONNECTIONS;
	f->env = (struct pool_env){.epoll_fd = -1, .signal_fd = -1, .scoreboard = &f->sb,
				   .sockets = &f->sockets, .returns = {-1, -1}};
	if (pool_new(&f->config, 0, WORKERS, INTAKE_CHANNEL, &f->pool) < 0)
		return -1;
	f->env.pools = f->pool;
	/* Running workers, as pool_spawn() would leave them. */
	for (unsigned i = 0; i < WORKERS; i++) {
		int pair[2];

		if (fdpass_channel_new(pair) < 0)
			return -1;
		f->pool->positions[i].pid = getpid();
		f->pool->positions[i].slot = (int)i;
		f->pool->positions[i].channel = pair[FDPASS_SUPERVISOR];
		f->worker_end[i] = pair[FDPASS_WORKER];
		SB_SET(f->sb.slots[i].state, SLOT_RUNNING);
	}
	if (children_init(&f->children, &f->sb, 0) < 0 ||
	    children_reserve(&f->children, MAX_CONNECTIONS) < 0)
		return -1;
	f->held = HELD_NONE;
	f->m = (struct model_ctx){
	    .env = &f->env, .pool = f->pool, .children = &f->children, .held = &f->held};
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	int held = held_take(&f->held, UINT64_MAX, NULL);

	if (held >= 0)
		close(held);
	f->children.n = 0;
	children_done(&f->children);
	pool_free(NULL, f->pool);
	for (unsigned i = 0; i < WORKERS; i++)
		close(f->worker_end[i]);
	config_done(&f->config);
	scoreboard_free(&f->sb);
	free(f);
	return 0;
}

/* A connected socket, standing in for an accepted connection. */
static int
connection(int *ret_peer)
{
	int pair[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	*ret_peer = pair[1];
	return pair[0];
}

/* What worker i finds on its channel next: the tag, or 0 when nothing. */
static char
received(struct fixture *f, unsigned i)
{
	if (f->next_unread[i] == f->n_unread[i]) {
		int fds[FDPASS_BATCH];
		unsigned lost;
		int n = fdpass_recv_batch(f->worker_end[i], f->unread[i], fds, FDPASS_BATCH, &lost);

		if (n == -EAGAIN)
			return 0;
		assert_true(n > 0);
		assert_int_equal(lost, 0);
		for (int k = 0; k < n; k++)
			close(fds[k]);
		f->n_unread[i] = (unsigned)n;
		f->next_unread[i] = 0;
		f->messages[i]++;
	}
	return (char)f->unread[i][f->next_unread[i]++];
}

/* One accepting turn of one connection: delivered, and what was queued
 * handed on. */
static void
deliver_turn(struct fixture *f)
{
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer;

	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	close(peer);
	assert_int_equal(ops->flush(&f->m), 0);
}

static void
test_every_model_has_its_table(void **state)
{
	(void)state;
	for (enum model id = MODEL_PREFORK; id <= MODEL_FORK; id++) {
		const struct model_ops *ops = model_get(id);

		assert_string_equal(ops->name, model_to_string(id));
		/* What the supervisor calls whatever the model. */
		assert_non_null(ops->pool_size);
		assert_non_null(ops->log_start);
		assert_non_null(ops->deliver_kept);
		assert_non_null(ops->active);
		assert_non_null(ops->status);
		/* It accepts itself exactly when it can deliver what it
		 * accepted; reserving means nothing otherwise. */
		assert_true((ops->has_room == NULL) == (ops->deliver == NULL));
		assert_true(!ops->reserves || ops->has_room);
	}
	/* How the workers get connections, one explicit value each. */
	assert_int_equal(model_get(MODEL_PREFORK)->worker_intake, INTAKE_LISTENERS);
	assert_true(model_get(MODEL_PREFORK)->shares_listeners);
	assert_null(model_get(MODEL_PREFORK)->has_room);
	assert_int_equal(model_get(MODEL_PASSFD)->worker_intake, INTAKE_CHANNEL);
	assert_true(model_get(MODEL_PASSFD)->reserves);
	assert_int_equal(model_get(MODEL_FORK)->worker_intake, INTAKE_NONE);
	assert_false(model_get(MODEL_FORK)->reserves);
}

static void
test_pool_sizes(void **state)
{
	struct fixture *f = *state;
	struct listener datagram = {.fd = -1, .kind = SOCKET_DATAGRAM};

	assert_int_equal(model_get(MODEL_PREFORK)->pool_size(&f->config, &f->sockets), WORKERS);
	assert_int_equal(model_get(MODEL_PASSFD)->pool_size(&f->config, &f->sockets), WORKERS);
	/* fork: a worker only for datagrams. */
	assert_int_equal(model_get(MODEL_FORK)->pool_size(&f->config, &f->sockets), 0);
	f->sockets.items = &datagram;
	f->sockets.n = 1;
	assert_int_equal(model_get(MODEL_FORK)->pool_size(&f->config, &f->sockets), 1);
	f->sockets = (struct listen_set){0};
}

/* passfd sends each connection to the worker with the fewest, counting
 * those still on their way; the worker gets it tagged as a new one, and
 * what one accepting turn gave it in one message. */
static void
test_passfd_delivers_to_least_loaded(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer;

	SB_SET(f->sb.slots[0].active, 2);
	for (int i = 0; i < 3; i++) {
		assert_true(ops->has_room(&f->m));
		assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
		close(peer);
	}
	/* Queued until the turn ends. */
	assert_int_equal(received(f, 0), 0);
	assert_int_equal(received(f, 1), 0);
	assert_int_equal(ops->flush(&f->m), 0);
	/* Worker 1 took the first two (0 and then 1 in flight, against 2);
	 * at 2 each, the third went to worker 0. */
	assert_int_equal(received(f, 1), FDPASS_CONN);
	assert_int_equal(received(f, 1), FDPASS_CONN);
	assert_int_equal(received(f, 1), 0);
	assert_int_equal(f->messages[1], 1);
	assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(received(f, 0), 0);
	assert_int_equal(ops->active(&f->m), 0); /* nothing reserved here */
	assert_false(pool_stalled(f->pool));
}

/* A burst of more than one message holds: a full batch goes as soon as it
 * is full, and the rest when the turn ends. */
static void
test_passfd_full_batch_goes_at_once(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer;

	f->pool->config.worker_connections = 2 * SHARE_FLOOR;
	SB_SET(f->sb.slots[0].watching, WATCHING_ALONE);
	SB_SET(f->sb.slots[0].received, 0);
	for (int i = 0; i < FDPASS_BATCH + 1; i++) {
		/* Taken as fast as sent: the worker keeps up, and stays alone. */
		SB_SET(f->sb.slots[0].received, (uint64_t)(i > 0 ? i - 1 : 0));
		assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
		close(peer);
	}
	/* The first FDPASS_BATCH went when the next one was queued. */
	for (int i = 0; i < FDPASS_BATCH; i++)
		assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(received(f, 0), 0);
	assert_int_equal(f->messages[0], 1);
	assert_int_equal(ops->flush(&f->m), 0);
	assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(f->messages[0], 2);
	assert_int_equal(received(f, 1), 0);
}

/* New connections go to the first worker that says it takes them alone
 * (it keeps up with short-lived ones), whatever the others hold, while it
 * takes what is sent and holds fewer than SHARE_FLOOR; then, and for kept
 * connections, the fewest count again. */
static void
test_passfd_sends_to_one_alone_while_it_keeps_up(void **state)
{
	struct fixture *f = *state;
	int peer, conn;

	f->pool->config.worker_connections = 2 * SHARE_FLOOR;
	SB_SET(f->sb.slots[0].watching, WATCHING_SHARED);
	SB_SET(f->sb.slots[1].watching, WATCHING_ALONE);
	SB_SET(f->sb.slots[1].active, 5);
	/* Sent, and not yet taken (this worker counts none as received). */
	for (int i = 0; i < POOL_ALONE_IN_FLIGHT; i++) {
		deliver_turn(f);
		assert_int_equal(received(f, 1), FDPASS_CONN);
	}
	assert_int_equal(received(f, 0), 0);
	/* As many on their way as a worker keeping up never leaves: it is
	 * stopped or stuck, and the one with the fewest takes the next. */
	deliver_turn(f);
	assert_int_equal(received(f, 0), FDPASS_CONN);
	/* Taken: relied on again, up to SHARE_FLOOR connections. */
	SB_SET(f->sb.slots[1].received, POOL_ALONE_IN_FLIGHT);
	SB_SET(f->sb.slots[1].active, SHARE_FLOOR - 1);
	deliver_turn(f);
	assert_int_equal(received(f, 1), FDPASS_CONN);
	SB_SET(f->sb.slots[1].received, POOL_ALONE_IN_FLIGHT + 1);
	SB_SET(f->sb.slots[1].active, SHARE_FLOOR);
	deliver_turn(f);
	assert_int_equal(received(f, 0), FDPASS_CONN);
	/* A kept connection spreads, alone or not. */
	SB_SET(f->sb.slots[1].active, 5);
	conn = connection(&peer);
	assert_int_equal(model_deliver_kept_to_pool(&f->m, conn, -1), 0);
	close(peer);
	assert_int_equal(received(f, 0), FDPASS_KEPT);
	assert_int_equal(received(f, 1), 0);
}

/* A burst faster than the workers take it fills every channel: the
 * connections wait in the queue with their reservations, nothing more is
 * accepted, and they go out once a channel has room again; a stop closes
 * them, counted lost, and gives their reservations back. */
static void
test_passfd_waits_for_a_channel(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer, filler = connection(&peer);
	unsigned queued[WORKERS] = {0};

	close(peer);
	for (unsigned i = 0; i < WORKERS; i++)
		while (fdpass_send(f->pool->positions[i].channel, FDPASS_CONN, filler) == 0)
			queued[i]++;
	assert_true(ledger_reserve(&f->sb)); /* as the acceptor does */
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	assert_int_equal(ops->flush(&f->m), 0);
	assert_true(pool_stalled(f->pool));
	assert_false(ops->has_room(&f->m));
	assert_int_equal(f->held.waits, 1); /* said, as for a held one */
	assert_int_equal(ops->retry(&f->m, 1), 0);
	assert_true(pool_stalled(f->pool));
	assert_int_equal(f->held.waits, 1); /* the same wait */
	/* Worker 0 takes what was queued: the retry sends it there. */
	for (unsigned n = 0; n < queued[0]; n++)
		assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(ops->retry(&f->m, 2), 0);
	assert_false(pool_stalled(f->pool));
	assert_true(ops->has_room(&f->m));
	assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(ledger_reserved(&f->sb), 1); /* the worker's to release */
	close(peer);
	/* Full again, then a stop. */
	while (fdpass_send(f->pool->positions[0].channel, FDPASS_CONN, filler) == 0)
		;
	assert_true(ledger_reserve(&f->sb));
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	assert_int_equal(ops->flush(&f->m), 0);
	assert_true(pool_stalled(f->pool));
	assert_int_equal(ops->abandon(&f->m), 1);
	assert_false(pool_stalled(f->pool));
	assert_int_equal(ledger_reserved(&f->sb), 1);
	assert_int_equal(ops->abandon(&f->m), 0);
	/* Its client sees the connection closed. */
	assert_int_equal(read(peer, (char[1]){0}, 1), 0);
	close(peer);
	close(filler);
}

/* A worker whose channel is full while another has room: what was queued
 * for it goes to the other in the same turn. */
static void
test_passfd_requeues_to_a_worker_with_room(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer, filler = connection(&peer);

	close(peer);
	while (fdpass_send(f->pool->positions[1].channel, FDPASS_CONN, filler) == 0)
		;
	/* Worker 1 has the fewest, so it is picked; its channel refuses. */
	SB_SET(f->sb.slots[0].active, 1);
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	close(peer);
	assert_int_equal(ops->flush(&f->m), 0);
	assert_false(pool_stalled(f->pool));
	assert_int_equal(received(f, 0), FDPASS_CONN);
	assert_int_equal(f->pool->positions[1].sent, 0);
	assert_int_equal(f->pool->positions[0].sent, 1);
	close(filler);
}

/* No worker has room at all (none runs): the connection is held, and
 * nothing more accepted until it is handed on or a stop closes it. */
static void
test_passfd_holds_when_no_worker_has_room(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);
	int peer;

	f->pool->positions[0].hung_up = true;
	f->pool->positions[1].hung_up = true;
	assert_true(ledger_reserve(&f->sb));
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	assert_true(held_waiting(&f->held));
	assert_false(ops->has_room(&f->m));
	/* Not due yet, and then due with a worker back. */
	assert_int_equal(ops->retry(&f->m, ACCEPT_RETRY_MS - 1), 0);
	assert_true(held_waiting(&f->held));
	f->pool->positions[0].hung_up = false;
	assert_int_equal(ops->retry(&f->m, ACCEPT_RETRY_MS), 0);
	assert_false(held_waiting(&f->held));
	assert_int_equal(received(f, 0), FDPASS_CONN);
	/* Again, and a stop. */
	f->pool->positions[0].hung_up = true;
	assert_true(ledger_reserve(&f->sb));
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	assert_true(held_waiting(&f->held));
	assert_int_equal(ops->abandon(&f->m), 1);
	assert_false(held_waiting(&f->held));
	assert_int_equal(ledger_reserved(&f->sb), 1);
	close(peer);
}

static void
test_passfd_room(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_PASSFD);

	assert_true(ops->has_room(&f->m));
	/* MaxConnections= reached across the service. */
	for (int i = 0; i < MAX_CONNECTIONS; i++)
		assert_true(ledger_reserve(&f->sb));
	assert_false(ops->has_room(&f->m));
	for (int i = 0; i < MAX_CONNECTIONS; i++)
		ledger_release(&f->sb);
	/* Every worker at WorkerConnections=. */
	SB_SET(f->sb.slots[0].active, 3);
	SB_SET(f->sb.slots[1].active, 3);
	assert_false(ops->has_room(&f->m));
	/* One with fewer fds than that: its own limit counts. */
	SB_SET(f->sb.slots[1].active, 1);
	SB_SET(f->sb.slots[1].capacity, 1);
	assert_false(ops->has_room(&f->m));
	SB_SET(f->sb.slots[1].capacity, 2);
	assert_true(ops->has_room(&f->m));
	/* A dead worker's channel takes nothing. */
	f->pool->positions[1].hung_up = true;
	assert_false(ops->has_room(&f->m));
}

/* A kept connection was admitted before: it goes beyond the cap, and its
 * owed bytes travel first, tagged. */
static void
test_kept_to_pool(void **state)
{
	struct fixture *f = *state;
	uint64_t id;
	int peer, conn = connection(&peer), owed;

	for (int i = 0; i < MAX_CONNECTIONS; i++)
		assert_true(ledger_reserve(&f->sb));
	assert_int_equal(kept_owed_pack(conn, "abc", 3, &id, &owed), 0);
	for (enum model m = MODEL_PREFORK; m <= MODEL_PASSFD; m++)
		assert_ptr_equal(model_get(m)->deliver_kept, model_deliver_kept_to_pool);
	assert_int_equal(model_get(MODEL_PASSFD)->deliver_kept(&f->m, conn, owed), 0);
	close(owed);
	close(peer);
	assert_int_equal(ledger_reserved(&f->sb), MAX_CONNECTIONS + 1);
	assert_int_equal(received(f, 0), FDPASS_OWED);
	assert_int_equal(received(f, 0), FDPASS_KEPT);
	assert_int_equal(received(f, 1), 0);
}

/* No worker can take it: the caller keeps it to try next turn, and its
 * reservation is not kept either. */
static void
test_kept_waits_for_a_worker(void **state)
{
	struct fixture *f = *state;
	int peer, conn = connection(&peer);

	f->pool->positions[0].hung_up = true;
	f->pool->positions[1].hung_up = true;
	assert_int_equal(model_deliver_kept_to_pool(&f->m, conn, -1), -EAGAIN);
	assert_true(fcntl(conn, F_GETFD) >= 0);
	assert_int_equal(ledger_reserved(&f->sb), 0);
	close(conn);
	close(peer);
}

static void
test_fork_room(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_FORK);
	struct notify_status st = {0};
	struct scoreboard_totals totals = {0};
	int peer;

	assert_true(ops->has_room(&f->m));
	f->children.n = MAX_CONNECTIONS; /* as many processes as connections allowed */
	assert_false(ops->has_room(&f->m));
	assert_int_equal(ops->active(&f->m), MAX_CONNECTIONS);
	ops->status(&f->m, &totals, &st);
	assert_int_equal(st.workers_running, MAX_CONNECTIONS);
	assert_int_equal(st.workers_wanted, MAX_CONNECTIONS);
	/* Those the connection forker forked count the same. */
	f->children.n = MAX_CONNECTIONS - 1;
	f->children.forker.alive = 1;
	assert_false(ops->has_room(&f->m));
	assert_int_equal(ops->active(&f->m), MAX_CONNECTIONS);
	f->children.forker.alive = 0;
	f->children.n = 1;
	assert_true(ops->has_room(&f->m));
	/* A connection waiting for fork() to work again: nothing more is
	 * accepted until it has its process... */
	held_put(&f->held, connection(&peer), false, 0, ACCEPT_PAUSE_MS);
	assert_false(ops->has_room(&f->m));
	/* ...and a stop closes it, counted lost. */
	assert_int_equal(ops->abandon(&f->m), 1);
	assert_true(ops->has_room(&f->m));
	assert_int_equal(ops->abandon(&f->m), 0);
	close(peer);
}

/* The connection forker's channel full (it is behind): the connection
 * waits as one does for fork() to work again, none is lost, and the count
 * of connection processes takes in only what went. A kept one waits for
 * the next turn, still the caller's. */
static void
test_fork_waits_for_a_forker_behind(void **state)
{
	struct fixture *f = *state;
	const struct model_ops *ops = model_get(MODEL_FORK);
	int pair[2], peer, kept_peer, kept, sent = 0;

	assert_int_equal(fdpass_channel_new(pair), 0);
	f->children.forker.pid = getpid(); /* running, as far as children.c knows */
	f->children.forker.channel = pair[FDPASS_SUPERVISOR];
	/* What a forker that reads nothing leaves: a full channel. */
	for (int i = 0; i < 100000; i++) {
		int fd = connection(&peer);
		int r = forker_link_send(&f->children.forker, &f->config, 0, FDPASS_CONN, fd, -1);

		if (r == -EAGAIN) {
			close(fd);
			close(peer);
			break;
		}
		assert_int_equal(r, 0);
		close(peer);
		sent++;
	}
	assert_true(sent > 0);
	assert_int_equal(children_alive(&f->children), (unsigned)sent);
	assert_int_equal(ops->deliver(&f->m, &(struct arrival){.fd = connection(&peer)}, 0), 0);
	assert_true(held_waiting(&f->held));
	assert_false(ops->has_room(&f->m));
	assert_int_equal(children_alive(&f->children), (unsigned)sent);
	kept = connection(&kept_peer);
	assert_int_equal(ops->deliver_kept(&f->m, kept, -1), -EAGAIN);
	assert_true(fcntl(kept, F_GETFD) >= 0);
	close(kept);
	close(kept_peer);
	assert_int_equal(ops->abandon(&f->m), 1);
	close(peer);
	f->children.forker.pid = 0;
	f->children.forker.channel = -1;
	f->children.forker.alive = 0;
	close(pair[FDPASS_SUPERVISOR]);
	close(pair[FDPASS_WORKER]);
}

static void
test_pool_status(void **state)
{
	struct fixture *f = *state;
	struct notify_status st = {0};
	struct scoreboard_totals totals = {.active = 5};

	f->pool->positions[1].pid = 0; /* one worker died, not yet respawned */
	model_get(MODEL_PREFORK)->status(&f->m, &totals, &st);
	assert_int_equal(st.workers_running, 1);
	assert_int_equal(st.workers_wanted, WORKERS);
	assert_int_equal(st.active, 5);
}

/* The respawn back-off doubles from 100 ms and stops at 30 s, however
 * long a position keeps failing. */
static void
test_respawn_backoff_cap(void **state)
{
	static const unsigned expected[] = {100, 100, 200, 400, 800, 1600, 3200, 6400, 12800,
					    25600, 30000, 30000};

	(void)state;
	for (unsigned i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		assert_int_equal(pool_backoff_ms(i), expected[i]);
	assert_int_equal(pool_backoff_ms(1000), 30000);
	assert_int_equal(pool_backoff_ms(UINT32_MAX), 30000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_model_has_its_table),
	    cmocka_unit_test(test_respawn_backoff_cap),
	    cmocka_unit_test_setup_teardown(test_pool_sizes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_delivers_to_least_loaded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_sends_to_one_alone_while_it_keeps_up, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_full_batch_goes_at_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_waits_for_a_channel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_requeues_to_a_worker_with_room, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_holds_when_no_worker_has_room, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_passfd_room, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kept_to_pool, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kept_waits_for_a_worker, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fork_room, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fork_waits_for_a_forker_behind, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_status, setup, teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
