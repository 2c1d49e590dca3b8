"""Token checks and the start-up refusal to serve a public address without a token."""
import pytest

from fiberapp.api import InsecureBind, check_bind_security
from fiberapp.api.auth import TokenCheck
from fiberapp.api.errors import Unauthorized
from fiberapp.runtime.errors import FiberappError


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "localhost:80", "[::1]:8080", ("127.0.0.5", 1)])
def test_loopback_needs_no_token(listen):
    check_bind_security(listen, None, False)


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80", "example.com:80", ("", 80)])
def test_public_address_without_token_is_refused(listen):
    with pytest.raises(InsecureBind) as info:
        check_bind_security(listen, None, False)
    assert isinstance(info.value, FiberappError)
    assert "api_token" in str(info.value)
    check_bind_security(listen, "secret", False)
    check_bind_security(listen, None, True)


def test_token_check():
    check = TokenCheck("s3cret")
    check.check("Bearer s3cret")
    for bad in (None, "", "Bearer s3cre", "bearer s3cret", "s3cret", "Bearer s3cret ", "Bearer \udcff"):
        with pytest.raises(Unauthorized) as info:
            check.check(bad)
        assert info.value.status == 401 and info.value.code == "unauthorized"
    TokenCheck(None).check(None)
    assert not TokenCheck("").enabled
