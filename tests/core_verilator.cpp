// Plays a core_check Scenario into the learning core's Verilog compiled by Verilator, cycle
// for cycle as core_check.core_testbenches does under the Amaranth simulator.
//
// Built by core_verilator.py (--prefix Vunit, top "core") and run as   harness IN OUT
// IN (int64 little-endian): the header below, the LUT, the initial hidden weights, then
// (address, d, seed) per update. OUT (int64): event count, busy cycles, the events as
// (address, old, new), the final hidden weights (sign-extended), the change counters.
// The event sink is ready in a cycle with probability ready_prob (a seeded splitmix64), so
// the pipeline stalls as it does in the Amaranth testbench.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "Vunit.h"
#include "verilated.h"

// Amaranth's port "update__valid" is "update___05Fvalid" in C++ (Verilator escapes "__")
#define PORT(group, name) group##___05F##name

namespace {

enum Header {
    SYNAPSES, LUT_ENTRIES, UPDATES, READY_PROB_PPM, RNG_SEED, HIDDEN_WIDTH,
    U_ADDR, U_ADDR_W, U_D, U_D_W, U_SEED, U_SEED_W,
    E_ADDR, E_ADDR_W, E_OLD, E_OLD_W, E_NEW, E_NEW_W,
    HEADER_SIZE
};

// A payload as 32-bit words, whatever C++ type Verilator gave the port.
struct Bits {
    uint32_t w[4] = {0, 0, 0, 0};
    void put(int64_t off, int64_t width, uint64_t v) {
        for (int64_t i = 0; i < width; ++i) {
            int64_t b = off + i;
            uint32_t bit = (v >> i) & 1u;
            w[b / 32] = (w[b / 32] & ~(1u << (b % 32))) | (bit << (b % 32));
        }
    }
    uint64_t get(int64_t off, int64_t width) const {
        uint64_t v = 0;
        for (int64_t i = 0; i < width; ++i) {
            int64_t b = off + i;
            v |= uint64_t((w[b / 32] >> (b % 32)) & 1u) << i;
        }
        return v;
    }
};

template <typename T>
void store(T& port, const Bits& b) {
    port = static_cast<T>(uint64_t(b.w[0]) | (uint64_t(b.w[1]) << 32));
}
template <std::size_t N>
void store(VlWide<N>& port, const Bits& b) {
    for (std::size_t i = 0; i < N; ++i) port[i] = b.w[i];
}
template <typename T>
Bits load(const T& port) {
    Bits b;
    uint64_t v = port;
    b.w[0] = uint32_t(v);
    b.w[1] = uint32_t(v >> 32);
    return b;
}
template <std::size_t N>
Bits load(const VlWide<N>& port) {
    Bits b;
    for (std::size_t i = 0; i < N; ++i) b.w[i] = port[i];
    return b;
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct Run {
    std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    std::unique_ptr<Vunit> core{new Vunit{context.get()}};
    const int64_t* h;
    uint64_t rng;
    std::vector<int64_t> events;
    int64_t cycles = 0;
    bool ready_at_edge = false;

    explicit Run(const int64_t* header) : h(header), rng(uint64_t(header[RNG_SEED])) {}

    // One clock, as the Amaranth testbenches see it: the sink picks its ready, inputs settle,
    // handshakes are sampled just before the edge, then the edge.
    void cycle() {
        core->PORT(events, ready) = (splitmix(rng) % 1000000) < uint64_t(h[READY_PROB_PPM]);
        core->clk = 0;
        core->eval();
        if (core->PORT(events, valid) && core->PORT(events, ready)) {
            Bits e = load(core->PORT(events, payload));
            events.push_back(int64_t(e.get(h[E_ADDR], h[E_ADDR_W])));
            events.push_back(int64_t(e.get(h[E_OLD], h[E_OLD_W])));
            events.push_back(int64_t(e.get(h[E_NEW], h[E_NEW_W])));
        }
        if (core->PORT(update, valid) || core->busy) ++cycles;
        ready_at_edge = core->PORT(update, ready);
        core->clk = 1;
        core->eval();
    }
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    std::FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    std::vector<int64_t> buf;
    int64_t x;
    while (std::fread(&x, sizeof x, 1, in) == 1) buf.push_back(x);
    std::fclose(in);
    const int64_t* h = buf.data();
    const int64_t synapses = h[SYNAPSES], entries = h[LUT_ENTRIES], updates = h[UPDATES];
    const int64_t* lut = h + HEADER_SIZE;
    const int64_t* hidden = lut + entries;
    const int64_t* stream = hidden + synapses;

    Run run(h);
    auto& core = run.core;
    for (;;) {  // a single-port core clears its memories after reset
        core->clk = 0;
        core->eval();
        if (!core->initializing) break;
        run.cycle();
    }
    for (int64_t i = 0; i < entries; ++i) {
        core->PORT(load, index) = i;
        core->PORT(load, value) = lut[i];
        core->PORT(load, en) = 1;
        run.cycle();
    }
    core->PORT(load, en) = 0;
    for (int64_t a = 0; a < synapses; ++a) {
        core->PORT(access, addr) = a;
        core->PORT(access, wdata) = hidden[a];
        core->PORT(access, we) = 1;
        core->PORT(access, clear) = 1;
        run.cycle();
    }
    core->PORT(access, we) = 0;
    core->PORT(access, clear) = 0;
    for (int64_t i = 0; i < updates; ++i) {
        Bits p;
        p.put(h[U_ADDR], h[U_ADDR_W], uint64_t(stream[3 * i]));
        p.put(h[U_D], h[U_D_W], uint64_t(stream[3 * i + 1]));
        p.put(h[U_SEED], h[U_SEED_W], uint64_t(stream[3 * i + 2]));
        core->PORT(update, valid) = 1;
        store(core->PORT(update, payload), p);
        do run.cycle();
        while (!run.ready_at_edge);
    }
    core->PORT(update, valid) = 0;
    run.cycle();
    for (;;) {
        core->clk = 0;
        core->eval();
        if (!core->busy) break;
        run.cycle();
    }
    std::vector<int64_t> final_w, counts;
    const int64_t sign = int64_t(1) << (h[HIDDEN_WIDTH] - 1);
    const int64_t mask = (int64_t(1) << h[HIDDEN_WIDTH]) - 1;
    for (int64_t a = 0; a < synapses; ++a) {
        core->PORT(access, addr) = a;
        run.cycle();  // the read, then the output register
        run.cycle();
        int64_t w = int64_t(core->PORT(access, rdata)) & mask;
        final_w.push_back((w ^ sign) - sign);
        counts.push_back(int64_t(core->PORT(access, count)));
    }
    core->final();

    std::FILE* out = std::fopen(argv[2], "wb");
    if (!out) return 2;
    int64_t head[2] = {int64_t(run.events.size() / 3), run.cycles};
    std::fwrite(head, sizeof(int64_t), 2, out);
    std::fwrite(run.events.data(), sizeof(int64_t), run.events.size(), out);
    std::fwrite(final_w.data(), sizeof(int64_t), final_w.size(), out);
    std::fwrite(counts.data(), sizeof(int64_t), counts.size(), out);
    return std::fclose(out) == 0 ? 0 : 2;
}
