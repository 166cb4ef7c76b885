/* Model=prefork: every worker accepts on the shared listening sockets
 * itself (worker-intake.c), taking its fair share; the supervisor accepts
 * nothing. Kept connections reach the workers over their channels. */
#include "model.h"

const struct model_ops model_prefork = {
    .name = "prefork",
    .pool_size = model_pool_size,
    .worker_intake = INTAKE_LISTENERS,
    .shares_listeners = true,
    .pool_returns = true,
    .log_start = model_pool_log_start,
    .deliver_kept = model_deliver_kept_to_pool,
    .active = model_pool_active,
    .status = model_pool_status,
};
