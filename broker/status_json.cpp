#include "broker/status_json.hpp"

#include "protocol/control_line.hpp"

#include <boost/json.hpp>

namespace foreman::broker {

std::string status_json(const lease::Snapshot& s) {
    namespace json = boost::json;
    json::array pools;
    for (const auto& p : s.pools) {
        json::array workers;
        for (const auto& w : p.workers) {
            json::object o;
            o["id"] = std::to_string(w.id);
            o["pid"] = w.pid;
            o["state"] = std::string(lease::public_name(w.state));
            o["requests"] = w.requests;
            o["user"] = w.user;
            if (!w.status.empty()) o["status"] = w.status;
            if (w.lease) o["lease"] = w.lease->id;
            workers.push_back(std::move(o));
        }
        json::array users;
        for (const auto& u : p.users) {
            json::object o;
            o["user"] = u.user;
            o["leases"] = u.leases;
            o["waiting"] = u.waiting;
            if (p.limits.per_user) o["workers"] = u.workers;
            users.push_back(std::move(o));
        }
        json::object po;
        po["protocol"] = p.protocol;
        po["queued"] = p.queued;
        po["leases_granted"] = p.leases_granted;
        po["draining"] = p.draining;
        po["workers_started"] = p.workers_started;
        po["spawn_failures"] = p.spawn_failures;
        po["workers"] = std::move(workers);
        po["users"] = std::move(users);
        pools.push_back(std::move(po));
    }
    json::object root;
    root["version"] = protocol::protocol_version;
    root["workers_total"] = s.workers_total;
    root["max_workers"] = s.max_workers;
    root["shutting_down"] = s.shutting_down;
    root["pools"] = std::move(pools);
    return json::serialize(root);
}

} // namespace foreman::broker
