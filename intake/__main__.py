"""`python -m intake`: serve the API and web form on ARENA_HOST:ARENA_PORT."""
import uvicorn

from intake.app import create_app
from intake.config import Settings


def main() -> None:
    settings = Settings.from_env()
    # h11 with a bounded incomplete event: request line and headers beyond ARENA_MAX_HEADER_BYTES are
    # refused by the server before they are held in memory.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, proxy_headers=True,
                http="h11", h11_max_incomplete_event_size=settings.max_header_bytes)


if __name__ == "__main__":
    main()
