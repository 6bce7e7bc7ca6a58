"""``python -m services.payfip_sim``: the simulator alone, for development.

gunicorn is what ``make run`` and docker-compose use; this needs nothing but werkzeug.
"""

import argparse
import logging
import sys

from werkzeug.serving import make_server

from services.payfip_sim.app import NotEnabled, create_app
from services.payfip_sim.model import setting


def main() -> None:
    parser = argparse.ArgumentParser(description="PayFiP simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(setting("PAYFIP_SIM_PORT")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except NotEnabled as e:
        sys.exit(f"payfip_sim: {e}")
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"PayFiP simulator on http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
