"""The notify service driven by the official Python client, with its emails sent by SMTP to a
real SMTP server (aiosmtpd) on a free port: an email arrives with its plain and HTML parts, a
repeat is a duplicate (204, nothing sent), the denylist refuses and lists."""

import email
import email.policy
import time

import pytest
import taskcluster
from aiosmtpd.controller import Controller

from test_queue import ROOT_TOKEN, free_port, serve


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture(scope="module")
def notify_root_url(smtp):
    controller, _ = smtp
    yield from serve(TASKLEDGER_SMTP_URL=f"smtp://127.0.0.1:{controller.port}",
                     TASKLEDGER_EMAIL_FROM="CI <ci@example.com>")


def notify(root_url):
    return taskcluster.Notify({"rootUrl": root_url, "maxRetries": 0, "credentials": {
        "clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}})


def wait_for(inbox, subject, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        for rcpt, content in inbox.messages:
            msg = email.message_from_bytes(content, policy=email.policy.default)
            if msg["Subject"] == subject:
                return rcpt, msg
        time.sleep(0.05)
    raise AssertionError(f"no email {subject!r} arrived")


def test_an_email_is_sent_by_smtp_once(notify_root_url, smtp):
    _, inbox = smtp
    n = notify(notify_root_url)
    subject = f"py notify {taskcluster.slugId()}"
    request = {"address": "dev@example.com", "subject": subject,
               "content": "Build **failed**: see [the log](https://example.com/log)",
               "link": {"text": "Inspect", "href": "https://example.com/t"}}
    n.email(request)
    rcpt, msg = wait_for(inbox, subject)
    assert rcpt == ["dev@example.com"]
    assert msg["From"] == "CI <ci@example.com>"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Build **failed**" in plain and "Inspect: https://example.com/t" in plain
    assert "<strong>failed</strong>" in html and 'href="https://example.com/log"' in html

    # the same email again is a duplicate: answered, and nothing more is sent
    n.email(request)
    time.sleep(1)
    assert sum(1 for _, c in inbox.messages
               if email.message_from_bytes(c, policy=email.policy.default)["Subject"] == subject) == 1


def test_the_denylist_refuses_lists_and_forgets(notify_root_url):
    n = notify(notify_root_url)
    address = {"notificationType": "email", "notificationAddress": "nobody@example.com"}
    n.addDenylistAddress(address)
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as refused:
        n.email({"address": "nobody@example.com", "subject": "s", "content": "c"})
    assert refused.value.status_code == 400
    assert refused.value.body["code"] == "DenylistedAddress"
    assert address in n.listDenylist()["addresses"]
    n.deleteDenylistAddress(address)
    assert address not in n.listDenylist()["addresses"]
