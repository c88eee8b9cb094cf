#pragma once
// Busy-looping threads that keep the cores occupied while a tune setting
// runs, so that the scheduling slop a loaded machine has shows up in the
// lease and heartbeat timings.

#include <atomic>
#include <thread>
#include <vector>

namespace foreman::bench {

class CpuHogs {
public:
    explicit CpuHogs(int n) {
        for (int i = 0; i < n; ++i)
            threads_.emplace_back([this] {
                volatile unsigned long spin = 0;
                while (!stop_.load(std::memory_order_relaxed)) spin = spin + 1;
            });
    }
    ~CpuHogs() {
        stop_ = true;
        for (auto& t : threads_) t.join();
    }
    CpuHogs(const CpuHogs&) = delete;
    CpuHogs& operator=(const CpuHogs&) = delete;

private:
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

} // namespace foreman::bench
