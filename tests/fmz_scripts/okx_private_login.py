# ruff: noqa
from dial.fmz import *

import json
import time


def getLogin(pAccessKey, pSecretKey, pPassphrase):
    ts = str(time.time())
    login = {
        "op": "login",
        "args": [
            {
                "apiKey": pAccessKey,
                "passphrase": pPassphrase,
                "timestamp": ts,
                "sign": exchange.HMAC(
                    "sha256", "base64", ts + "GET" + "/users/self/verify", pSecretKey
                ),
            }
        ],
    }
    return login


client_private = None


def main():
    global client_private
    SetErrorFilter("timeout")
    posSubscribe = {"op": "subscribe", "args": [{"channel": "positions", "instType": "ANY"}]}
    accessKey = "xxx"
    secretKey = "xxx"
    passphrase = "xxx"
    client_private = Dial("wss://ws.okx.com:8443/ws/v5/private")
    client_private.write(json.dumps(getLogin(accessKey, secretKey, passphrase)))
    Sleep(3000)
    client_private.write(json.dumps(posSubscribe))
    if client_private:
        lastPingTS = time.time() * 1000
        while True:
            buf = client_private.read(-1)
            if buf:
                Log(buf)
            if buf == "" and client_private.write(json.dumps(posSubscribe)) == 0:
                Log("Disconnection detected, close connection, reconnect")
                ret = client_private.close()
                client_private = Dial("wss://ws.okx.com:8443/ws/v5/private")
                client_private.write(json.dumps(getLogin(accessKey, secretKey, passphrase)))
                Sleep(3000)
                client_private.write(json.dumps(posSubscribe))
            nowPingTS = time.time() * 1000
            if nowPingTS - lastPingTS > 10 * 1000:
                client_private.write("ping")
                lastPingTS = nowPingTS


def onexit():
    ret = client_private.close()
    Log("Close the connection!", ret)


main()
