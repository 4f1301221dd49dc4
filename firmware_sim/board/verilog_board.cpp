// The Verilog-backed simulated board: the unit's generated Verilog, compiled by Verilator,
// talking 8N1 on its uart_rx / uart_tx pins to a byte stream on one file descriptor.
//
// Built by metaplast.firmware_sim.board.verilog_board (with --prefix Vunit, top metaplast_unit)
// and run as   harness --fd N --divisor D
// where N is a pty master or a socket. Bytes read from N are driven into uart_rx bit by bit,
// back to back, D clocks a bit; the bits on uart_tx are decoded (sampled mid-bit) and written
// to N. prog_busy is tied low, so the programming port never waits (as on the Amaranth-backed
// board). When nothing is on the line and the design's whole state no longer changes from one
// clock to the next, the harness sleeps in poll() until the host writes again: an idle board
// costs no CPU. It exits when the peer closes a socket (end of file).

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "Vunit.h"
#include "Vunit___024root.h"
#include "verilated.h"

namespace {

constexpr long QUIET_BITS = 200;   // bit times with no byte either way before idling is checked
constexpr long POLL_EVERY = 256;   // clocks between looks at the descriptor while busy

struct Board {
    std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    std::unique_ptr<Vunit> unit{new Vunit{context.get()}};
    int fd;
    int divisor;
    std::deque<unsigned char> inbox;
    std::vector<unsigned char> outbox;
    // host -> unit: the byte being driven (start, 8 data, stop bits, LSB first)
    unsigned shift = 0;
    int bits_left = 0;
    int bit_clocks = 0;
    // unit -> host: the decoder's state (0 idle, 1 start bit, 2 data bits, 3 stop bit)
    int rx_state = 0;
    int rx_count = 0;
    int rx_bit = 0;
    unsigned rx_byte = 0;
    long quiet = 0;  // clocks since the last byte in either direction
    bool closed = false;

    Board(int fd_, int divisor_) : fd(fd_), divisor(divisor_) {}

    void tick() {
        unit->clk = 0;
        unit->eval();
        unit->clk = 1;
        unit->eval();
    }

    void reset() {
        unit->uart_rx = 1;
        unit->prog_busy = 0;
        unit->rst = 1;
        for (int i = 0; i < 4; ++i) tick();
        unit->rst = 0;
        tick();
    }

    // One clock: drive uart_rx, clock, decode uart_tx as sampled after the edge.
    void step() {
        if (bits_left == 0 && !inbox.empty()) {
            shift = (unsigned(inbox.front()) << 1) | 0x200u;
            inbox.pop_front();
            bits_left = 10;
            bit_clocks = divisor;
            quiet = 0;
        }
        unit->uart_rx = bits_left ? (shift & 1u) : 1u;
        tick();
        if (bits_left && --bit_clocks == 0) {
            shift >>= 1;
            bit_clocks = divisor;
            --bits_left;
        }
        decode(unit->uart_tx);
        ++quiet;
    }

    void decode(unsigned tx) {
        if (rx_state == 0) {
            if (!tx) {
                rx_state = 1;
                rx_count = divisor / 2;
            }
            return;
        }
        if (--rx_count) return;
        rx_count = divisor;
        if (rx_state == 1) {
            rx_state = 2;
            rx_bit = 0;
            rx_byte = 0;
        } else if (rx_state == 2) {
            rx_byte |= (tx & 1u) << rx_bit;
            if (++rx_bit == 8) rx_state = 3;
        } else {
            if (tx) {
                outbox.push_back(static_cast<unsigned char>(rx_byte));
            } else {
                std::fprintf(stderr, "verilog board: stop bit missing on uart_tx\n");
            }
            rx_state = 0;
            quiet = 0;
        }
    }

    // Move what can move between the descriptor and the queues without blocking.
    void exchange() {
        if (!outbox.empty()) {
            ssize_t n = ::write(fd, outbox.data(), outbox.size());
            if (n > 0) outbox.erase(outbox.begin(), outbox.begin() + n);
        }
        unsigned char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            inbox.insert(inbox.end(), buf, buf + n);
        } else if (n == 0) {
            closed = true;  // a socket's peer is gone
        } else if (errno == EIO) {
            ::usleep(50000);  // a pty with no host on it: wait for one
        }
    }

    bool line_quiet() const {
        return inbox.empty() && outbox.empty() && bits_left == 0 && rx_state == 0 &&
               quiet > QUIET_BITS * divisor;
    }

    // True when one more clock with the line idle leaves every bit of the design unchanged:
    // with constant inputs it then never changes again until the host sends something.
    bool settled() {
        const auto* root = reinterpret_cast<const unsigned char*>(unit->rootp);
        std::vector<unsigned char> before(root, root + sizeof(*unit->rootp));
        step();
        return std::memcmp(before.data(), root, before.size()) == 0;
    }

    void wait_for_host() {
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
    }

    void run() {
        reset();
        long next_check = 1;
        while (!closed) {
            exchange();
            if (line_quiet()) {
                if (settled()) {
                    wait_for_host();
                    next_check = 1;
                    continue;
                }
                // still working (a long block): look again later, less often
                for (long i = 0; i < next_check && inbox.empty(); ++i) step();
                if (next_check < 4096) next_check *= 2;
                continue;
            }
            long clocks = inbox.empty() && bits_left == 0 ? 16 : POLL_EVERY;
            for (long i = 0; i < clocks; ++i) step();
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    int fd = -1;
    int divisor = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string flag = argv[i];
        if (flag == "--fd") {
            fd = std::atoi(argv[i + 1]);
        } else if (flag == "--divisor") {
            divisor = std::atoi(argv[i + 1]);
        }
    }
    if (fd < 0 || divisor < 2) {
        std::fprintf(stderr, "usage: %s --fd N [--divisor D]\n", argv[0]);
        return 2;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    Board board(fd, divisor);
    board.run();
    board.unit->final();
    return 0;
}
