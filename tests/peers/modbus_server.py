"""A Modbus server on pymodbus (an implementation independent of tokio-modbus), for interop tests.

Serves one device (unit id 1) whose registers hold known values in mixed encodings and word orders,
encoded here with pymodbus's own `convert_to_registers` and Python's `struct`, not with Twinloom's
codec. Prints `LISTENING <port>` once it accepts connections, and exits when stdin closes.

Usage: python modbus_server.py [--framing tcp|rtu-over-tcp]
"""

import argparse
import asyncio
import struct
import sys

from pymodbus import FramerType
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

DT = ModbusClientMixin.DATATYPE


def words(value, data_type, order):
    """Registers of `value` in word/byte order ABCD, BADC, CDAB or DCBA."""
    regs = ModbusClientMixin.convert_to_registers(value, data_type, word_order="little" if order in ("CDAB", "DCBA") else "big")
    if order in ("BADC", "DCBA"):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


# (address, registers): the layout the Rust test binds to.
HOLDING = [
    (0, words(-12345, DT.INT16, "ABCD")),
    (1, words(54321, DT.UINT16, "ABCD")),
    (2, words(-123456789, DT.INT32, "ABCD")),
    (4, words(3000000000, DT.UINT32, "CDAB")),
    (6, words(3.5, DT.FLOAT32, "BADC")),
    (8, words(-1.25, DT.FLOAT32, "DCBA")),
    (10, words(-9000000000000000, DT.INT64, "CDAB")),
    (14, words(18000000000000000000, DT.UINT64, "DCBA")),
    (18, words(2.718281828459045, DT.FLOAT64, "ABCD")),
    (22, words(-0.001, DT.FLOAT64, "BADC")),
    (26, [0b0000_0100_0000_0000]),  # bit 10 set
    (27, list(struct.unpack(">4H", b"PUMP-07\x00"))),
]
INPUT = [(0, [2315])]  # scaled ×0.01 → 23.15
COILS = {3: True, 4: False}
DISCRETE = {9: True}


def device():
    holding = [SimData(address, values=regs, datatype=DataType.REGISTERS) for address, regs in HOLDING]
    inputs = [SimData(address, values=regs, datatype=DataType.REGISTERS) for address, regs in INPUT]
    coils = [SimData(0, values=[COILS.get(i, False) for i in range(16)], datatype=DataType.BITS)]
    discrete = [SimData(0, values=[DISCRETE.get(i, False) for i in range(16)], datatype=DataType.BITS)]
    return SimDevice(1, simdata=(coils, discrete, holding, inputs))


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--framing", choices=["tcp", "rtu-over-tcp"], default="tcp")
    args = parser.parse_args()
    framer = FramerType.SOCKET if args.framing == "tcp" else FramerType.RTU
    server = ModbusTcpServer(device(), framer=framer, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    # Stop when the test closes our stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
