# ruff: noqa
from dial.fmz import *

import json


def main():
    LogStatus("Connecting...")
    client = Dial("wss://stream.binance.com:9443/ws/!ticker@arr")
    if not client:
        Log("Connection failed, program exited")
        return
    while True:
        buf = client.read()
        if not buf:
            break
        table = {
            "type": "table",
            "title": "Ticker Chart",
            "cols": [
                "Currency",
                "Highest",
                "Lowest",
                "Buy 1",
                "Sell 1",
                "Last traded price",
                "Volume",
                "Update time",
            ],
            "rows": [],
        }
        obj = json.loads(buf)
        for i in range(len(obj)):
            table["rows"].append(
                [
                    obj[i]["s"],
                    obj[i]["h"],
                    obj[i]["l"],
                    obj[i]["b"],
                    obj[i]["a"],
                    obj[i]["c"],
                    obj[i]["q"],
                    _D(int(obj[i]["E"])),
                ]
            )
        LogStatus("`" + json.dumps(table) + "`")
    client.close()


main()
