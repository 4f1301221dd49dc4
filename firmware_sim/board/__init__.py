"""Simulated boards on a virtual serial port: the command model (:mod:`.serial_port`) or the
gateware under the Amaranth simulator (:mod:`.rtl_board`, driving :mod:`.uart_pins`), and a
faulty line in front of either (:mod:`.faults`)."""
