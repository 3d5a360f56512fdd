"""The ``worker`` process entry: ``dramatiq workers.main`` (see the Procfile).

Builds the broker from the environment and moves the actors onto it.
"""

from loyalty import logs
from loyalty.settings import get_settings
from workers.broker import build_broker, install_broker
from workers.shutdown import pass_on_first_sigterm_only

logs.configure()
pass_on_first_sigterm_only()
broker = install_broker(build_broker(get_settings()))
