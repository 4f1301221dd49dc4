"""Everything metaplast simulates so that it runs without hardware, in three parts that never
import each other:

- :mod:`~metaplast.firmware_sim.unit`: the digital unit, bit-exact, and its command engine's
  behaviour (bytes in, bytes out);
- :mod:`~metaplast.firmware_sim.board`: boards a host talks to over a virtual serial port,
  backed by that model or by the gateware itself, and a faulty line to put in front of them;
- :mod:`~metaplast.firmware_sim.crossbar`: memristive devices as data, the crossbar arrays made
  of them, and ex-situ transfers onto fresh arrays.
"""
