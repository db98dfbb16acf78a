""" Tests of the stand-in queue manager, driven through IBM's real `ibmmq` Python layer. """

from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from zato_plugin_ibm_mq.testing.standin import QueueManagerStandIn, c_module, install, installed, uninstall

CHANNEL = 'DEV.APP.SVRCONN'
CONN_NAME = 'localhost(1414)'
USER, PASSWORD = 'app', 'passw0rd'
QUEUE = 'DEV.QUEUE.1'
DLQ = 'DEV.DEAD.LETTER.QUEUE'

# ################################################################################################################################

@pytest.fixture
def qm():
    qm = QueueManagerStandIn('QM1', channels=[CHANNEL], listeners=[CONN_NAME], users={USER: PASSWORD},
                             dead_letter_queue=DLQ)
    qm.define_queue(QUEUE, max_depth=5, backout_threshold=3, backout_queue='DEV.BACKOUT.1', default_priority=4)
    qm.define_queue('DEV.BACKOUT.1')
    with installed(qm):
        yield qm

@pytest.fixture
def ibmmq(qm):
    import ibmmq
    return ibmmq

@pytest.fixture
def connect(ibmmq):
    """ Opens client connections, disconnecting those still open at the end of the test. """
    opened = []

    def connect(**kwargs):
        args = {'queue_manager': 'QM1', 'channel': CHANNEL, 'conn_info': CONN_NAME, 'user': USER,
                'password': PASSWORD} | kwargs
        conn = ibmmq.connect(args.pop('queue_manager'), args.pop('channel'), args.pop('conn_info'), **args)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        try:
            conn.disconnect()
        except (ibmmq.MQMIError, ibmmq.PYIFError):
            pass

def open_queue(ibmmq, conn, options=None, name=QUEUE):
    CMQC = ibmmq.CMQC
    return ibmmq.Queue(conn, name, options if options is not None else CMQC.MQOO_INPUT_AS_Q_DEF | CMQC.MQOO_OUTPUT)

def no_wait(ibmmq, **kwargs):
    return ibmmq.GMO(Options=ibmmq.CMQC.MQGMO_NO_WAIT | kwargs.pop('extra', 0), **kwargs)

def assert_reason(error_info, ibmmq, name):
    reason = getattr(ibmmq.CMQC, name)
    assert error_info.value.reason == reason, f'{error_info.value} is not {name} ({reason})'
    assert name in error_info.value.error_as_string()

# ################################################################################################################################

def test_install_makes_ibmmq_use_the_stand_in(ibmmq):
    assert sys.modules['ibmmq.ibmmqc'] is c_module()
    assert ibmmq.ibmmqc is c_module()
    assert sys.modules['mqqueue'].ibmmqc is c_module()
    assert ibmmq.__c_version__ == ibmmq.__py_version__

def test_install_re_points_an_ibmmq_imported_over_another_c_module(ibmmq, qm, monkeypatch):
    import types
    other = types.ModuleType('ibmmq.ibmmqc')
    monkeypatch.setitem(sys.modules, 'ibmmq.ibmmqc', other)
    monkeypatch.setattr(sys.modules['mqqueue'], 'ibmmqc', other)
    monkeypatch.setattr(ibmmq, 'ibmmqc', other)
    assert install(qm) is ibmmq
    assert sys.modules['ibmmq.ibmmqc'] is c_module()
    assert sys.modules['mqqueue'].ibmmqc is c_module()
    assert ibmmq.ibmmqc is c_module()

def test_put_to_a_deleted_queue(ibmmq, qm, connect):
    queue = open_queue(ibmmq, connect())
    qm.delete_queue(QUEUE)
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.put(b'x')
    assert_reason(info, ibmmq, 'MQRC_Q_DELETED')
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_Q_DELETED')

def test_client_connection_and_queue_manager_attributes(ibmmq, connect):
    conn = connect()
    CMQC = ibmmq.CMQC
    attrs = conn.inquire([CMQC.MQCA_Q_MGR_NAME, CMQC.MQCA_DEAD_LETTER_Q_NAME, CMQC.MQIA_COMMAND_LEVEL])
    assert ibmmq.to_string(attrs[CMQC.MQCA_Q_MGR_NAME]) == 'QM1'
    assert ibmmq.to_string(attrs[CMQC.MQCA_DEAD_LETTER_Q_NAME]) == DLQ
    assert len(attrs[CMQC.MQCA_DEAD_LETTER_Q_NAME]) == CMQC.MQ_Q_NAME_LENGTH
    assert attrs[CMQC.MQIA_COMMAND_LEVEL] == 940
    assert conn.is_connected

def test_queue_attributes_through_inquire(ibmmq, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    queue = ibmmq.Queue(conn, QUEUE)
    attrs = queue.inquire([CMQC.MQIA_MAX_Q_DEPTH, CMQC.MQIA_BACKOUT_THRESHOLD, CMQC.MQCA_BACKOUT_REQ_Q_NAME,
                           CMQC.MQIA_CURRENT_Q_DEPTH, CMQC.MQCA_Q_NAME, CMQC.MQIA_Q_TYPE])
    assert attrs[CMQC.MQIA_MAX_Q_DEPTH] == 5
    assert attrs[CMQC.MQIA_BACKOUT_THRESHOLD] == 3
    assert ibmmq.to_string(attrs[CMQC.MQCA_BACKOUT_REQ_Q_NAME]) == 'DEV.BACKOUT.1'
    assert attrs[CMQC.MQIA_CURRENT_Q_DEPTH] == 0
    assert ibmmq.to_string(attrs[CMQC.MQCA_Q_NAME]) == QUEUE
    assert attrs[CMQC.MQIA_Q_TYPE] == CMQC.MQQT_LOCAL
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.inquire(CMQC.MQIA_TRIGGER_DEPTH)
    assert_reason(info, ibmmq, 'MQRC_SELECTOR_ERROR')

def test_inquire_on_a_queue_not_opened_for_inquire(ibmmq, connect):
    queue = open_queue(ibmmq, connect(), ibmmq.CMQC.MQOO_OUTPUT)
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.inquire(ibmmq.CMQC.MQIA_MAX_Q_DEPTH)
    assert_reason(info, ibmmq, 'MQRC_NOT_OPEN_FOR_INQUIRE')

# ################################################################################################################################

@pytest.mark.parametrize(('kwargs', 'reason'), [
    ({'password': 'wrong'}, 'MQRC_NOT_AUTHORIZED'),
    ({'user': 'nobody'}, 'MQRC_NOT_AUTHORIZED'),
    ({'user': None, 'password': None}, 'MQRC_NOT_AUTHORIZED'),
    ({'queue_manager': 'QM9'}, 'MQRC_Q_MGR_NAME_ERROR'),
    ({'channel': 'NO.SUCH.CHANNEL'}, 'MQRC_UNKNOWN_CHANNEL_NAME'),
    ({'conn_info': 'otherhost(1414)'}, 'MQRC_HOST_NOT_AVAILABLE'),
    ({'conn_info': 'localhost(1415)'}, 'MQRC_HOST_NOT_AVAILABLE'),
])
def test_connection_refused(ibmmq, connect, kwargs, reason):
    with pytest.raises(ibmmq.MQMIError) as info:
        connect(**kwargs)
    assert info.value.comp == ibmmq.CMQC.MQCC_FAILED
    assert_reason(info, ibmmq, reason)

def test_connection_names_are_tried_in_order_and_localhost_is_127_0_0_1(connect):
    conn = connect(conn_info='otherhost(1414),127.0.0.1(1414)', queue_manager='')
    assert conn.get_handle()

def test_local_bindings_need_credentials_when_users_are_configured(ibmmq):
    with pytest.raises(ibmmq.MQMIError) as info:
        ibmmq.QueueManager('QM1')
    assert_reason(info, ibmmq, 'MQRC_NOT_AUTHORIZED')
    conn = ibmmq.QueueManager(None)
    conn.connect_with_options('QM1', user=USER, password=PASSWORD)
    conn.disconnect()

def test_unknown_queue(ibmmq, connect):
    with pytest.raises(ibmmq.MQMIError) as info:
        open_queue(ibmmq, connect(), name='NO.SUCH.QUEUE')
    assert_reason(info, ibmmq, 'MQRC_UNKNOWN_OBJECT_NAME')
    assert info.value.reason == 2085

# ################################################################################################################################

def test_put_fills_the_message_descriptor_as_a_queue_manager_does(ibmmq, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    queue = open_queue(ibmmq, conn)
    put_md = ibmmq.MD(ReplyToQ=b'DEV.REPLY', CorrelId=b'C' * 24, Persistence=CMQC.MQPER_PERSISTENT,
                      Expiry=600, MsgType=CMQC.MQMT_REQUEST)
    queue.put('zażółć', put_md)
    assert len(put_md.MsgId) == 24
    assert put_md.MsgId.startswith(b'AMQ QM1')

    md = ibmmq.MD()
    body = queue.get(None, md, no_wait(ibmmq))
    assert body == 'zażółć'.encode('utf8')
    assert md.MsgId == put_md.MsgId
    assert md.CorrelId == b'C' * 24
    assert md.Format == CMQC.MQFMT_STRING
    assert md.CodedCharSetId == 1208
    assert md.Persistence == CMQC.MQPER_PERSISTENT
    assert md.Priority == 4                              # DEFPRTY of the queue
    assert md.MsgType == CMQC.MQMT_REQUEST
    assert ibmmq.to_string(md.ReplyToQ) == 'DEV.REPLY'
    assert md.BackoutCount == 0
    assert 0 < md.Expiry <= 600
    assert md.PutApplType == CMQC.MQAT_UNIX
    assert ibmmq.to_string(md.PutApplName)
    assert ibmmq.to_string(md.UserIdentifier) == USER
    assert re.fullmatch(rb'20\d{6}', md.PutDate)
    assert re.fullmatch(rb'\d{8}', md.PutTime)
    assert md.PutDate == time.strftime('%Y%m%d', time.gmtime()).encode()

def test_msg_ids_are_unique(ibmmq, qm, connect):
    queue = open_queue(ibmmq, connect())
    ids = set()
    for _ in range(5):
        md = ibmmq.MD()
        queue.put(b'x', md)
        ids.add(md.MsgId)
    assert len(ids) == 5
    assert {m.msg_id for m in qm.messages(QUEUE)} == ids

def test_put1_and_exclusive_input(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    md = ibmmq.MD()
    conn.put1(QUEUE, b'one shot', md)
    assert [m.msg_id for m in qm.messages(QUEUE)] == [md.MsgId]
    with pytest.raises(ibmmq.MQMIError) as info:
        conn.put1('NO.SUCH.QUEUE', b'x')
    assert_reason(info, ibmmq, 'MQRC_UNKNOWN_OBJECT_NAME')

    exclusive = open_queue(ibmmq, conn, CMQC.MQOO_INPUT_EXCLUSIVE)
    with pytest.raises(ibmmq.MQMIError) as info:
        open_queue(ibmmq, connect(), CMQC.MQOO_INPUT_SHARED)
    assert_reason(info, ibmmq, 'MQRC_OBJECT_IN_USE')
    exclusive.close()
    open_queue(ibmmq, connect(), CMQC.MQOO_INPUT_SHARED)

def test_syncpoint_if_persistent(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    qm.put(QUEUE, b'persistent', Persistence=CMQC.MQPER_PERSISTENT)
    qm.put(QUEUE, b'not persistent', Persistence=CMQC.MQPER_NOT_PERSISTENT)
    conn = connect()
    queue = open_queue(ibmmq, conn)
    gmo = no_wait(ibmmq, extra=CMQC.MQGMO_SYNCPOINT_IF_PERSISTENT)
    assert queue.get(None, ibmmq.MD(), gmo) == b'persistent'
    assert queue.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_SYNCPOINT_IF_PERSISTENT)) == b'not persistent'
    conn.backout()
    assert [(m.data, m.backout_count) for m in qm.messages(QUEUE)] == [(b'persistent', 1)]

def test_queue_full(ibmmq, connect):
    queue = open_queue(ibmmq, connect())
    for _ in range(5):
        queue.put(b'x')
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.put(b'x')
    assert_reason(info, ibmmq, 'MQRC_Q_FULL')
    assert info.value.reason == 2053

def test_no_message_available(ibmmq, connect):
    queue = open_queue(ibmmq, connect())
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')

def test_priority_order_then_fifo(ibmmq, qm, connect):
    queue = open_queue(ibmmq, connect())
    for body, priority in [(b'low-1', 1), (b'high', 8), (b'low-2', 1), (b'default', -1)]:
        queue.put(body, ibmmq.MD(Priority=priority))
    got = [queue.get(None, ibmmq.MD(), no_wait(ibmmq)) for _ in range(4)]
    assert got == [b'high', b'default', b'low-1', b'low-2']

def test_get_by_msg_id_and_by_correl_id(ibmmq, connect):
    CMQC = ibmmq.CMQC
    queue = open_queue(ibmmq, connect())
    mds = []
    for i in range(3):
        md = ibmmq.MD(CorrelId=b'corr-%d' % i)
        queue.put(b'msg-%d' % i, md)
        mds.append(md)

    md = ibmmq.MD(MsgId=mds[1].MsgId)
    assert queue.get(None, md, no_wait(ibmmq, MatchOptions=CMQC.MQMO_MATCH_MSG_ID)) == b'msg-1'
    md = ibmmq.MD(CorrelId=b'corr-2')
    assert queue.get(None, md, no_wait(ibmmq, MatchOptions=CMQC.MQMO_MATCH_CORREL_ID)) == b'msg-2'
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(CorrelId=b'corr-2'), no_wait(ibmmq, MatchOptions=CMQC.MQMO_MATCH_CORREL_ID))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')
    assert queue.get(None, ibmmq.MD(), no_wait(ibmmq)) == b'msg-0'

def test_truncation(ibmmq, connect):
    CMQC = ibmmq.CMQC
    queue = open_queue(ibmmq, connect())
    queue.put(b'0123456789' * 1000)
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(10, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_TRUNCATED_MSG_FAILED')
    assert info.value.original_length == 10000
    # Without a max length the `ibmmq` layer retries with the real length: the message is still there.
    assert len(queue.get(None, ibmmq.MD(), no_wait(ibmmq))) == 10000

    queue.put(b'0123456789')
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(4, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_ACCEPT_TRUNCATED_MSG))
    assert_reason(info, ibmmq, 'MQRC_TRUNCATED_MSG_ACCEPTED')
    assert info.value.message == b'0123'
    with pytest.raises(ibmmq.MQMIError):
        queue.get(None, ibmmq.MD(), no_wait(ibmmq))

def test_browse_leaves_messages_on_the_queue(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    open_queue(ibmmq, conn, CMQC.MQOO_OUTPUT).put(b'a')
    open_queue(ibmmq, conn, CMQC.MQOO_OUTPUT).put(b'b')
    browser = open_queue(ibmmq, conn, CMQC.MQOO_BROWSE)
    assert browser.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_BROWSE_FIRST)) == b'a'
    assert browser.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_BROWSE_NEXT)) == b'b'
    with pytest.raises(ibmmq.MQMIError) as info:
        browser.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_BROWSE_NEXT))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')
    assert qm.depth(QUEUE) == 2
    with pytest.raises(ibmmq.MQMIError) as info:
        browser.get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_NOT_OPEN_FOR_INPUT')

def test_expired_messages_are_not_delivered(ibmmq, qm, connect):
    queue = open_queue(ibmmq, connect())
    queue.put(b'short-lived', ibmmq.MD(Expiry=1))      # a tenth of a second
    time.sleep(0.15)
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')
    assert qm.depth(QUEUE) == 0

def test_get_inhibited_through_set(ibmmq, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    ibmmq.Queue(conn, QUEUE).set(CMQC.MQIA_INHIBIT_GET, CMQC.MQQA_GET_INHIBITED)
    with pytest.raises(ibmmq.MQMIError) as info:
        open_queue(ibmmq, conn).get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_GET_INHIBITED')

# ################################################################################################################################

def test_a_waiting_getter_is_woken_by_a_put_from_another_thread(ibmmq, connect):
    CMQC = ibmmq.CMQC
    getter = open_queue(ibmmq, connect(), CMQC.MQOO_INPUT_SHARED)
    putter = open_queue(ibmmq, connect(), CMQC.MQOO_OUTPUT)
    threading.Timer(0.2, putter.put, args=(b'late',)).start()
    started = time.monotonic()
    body = getter.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=5000))
    elapsed = time.monotonic() - started
    assert body == b'late'
    assert 0.15 < elapsed < 4

def test_wait_interval_expires(ibmmq, connect):
    CMQC = ibmmq.CMQC
    queue = open_queue(ibmmq, connect())
    started = time.monotonic()
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=300))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')
    assert time.monotonic() - started >= 0.29

def test_many_threads_get_every_message_exactly_once(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    qm.define_queue('DEV.BIG', max_depth=10000)
    total, consumers = 400, 6
    got, errors = [], []
    lock = threading.Lock()

    def consume():
        try:
            queue = open_queue(ibmmq, connect(), name='DEV.BIG')
            while True:
                try:
                    body = queue.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=500))
                except ibmmq.MQMIError as e:
                    if e.reason == CMQC.MQRC_NO_MSG_AVAILABLE:
                        return
                    raise
                with lock:
                    got.append(body)
        except Exception as e:      # Surface thread failures in the test.
            errors.append(e)

    def produce(start):
        queue = open_queue(ibmmq, connect(), CMQC.MQOO_OUTPUT, name='DEV.BIG')
        for i in range(start, total, 2):
            queue.put(b'%d' % i)

    threads = [threading.Thread(target=consume) for _ in range(consumers)]
    threads += [threading.Thread(target=produce, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(got, key=int) == [b'%d' % i for i in range(total)]
    assert qm.depth('DEV.BIG') == 0

# ################################################################################################################################

def test_get_under_syncpoint_then_backout_and_commit(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    conn, other = connect(), connect()
    queue, other_queue = open_queue(ibmmq, conn), open_queue(ibmmq, other)
    for body in (b'first', b'second'):
        qm.put(QUEUE, body)

    syncpoint = CMQC.MQGMO_SYNCPOINT
    assert queue.get(None, ibmmq.MD(), no_wait(ibmmq, extra=syncpoint)) == b'first'
    # Invisible to the other connection, still counted in CURDEPTH.
    assert other_queue.get(None, ibmmq.MD(), no_wait(ibmmq)) == b'second'
    assert qm.depth(QUEUE) == 1
    assert qm.messages(QUEUE) == []
    conn.backout()

    md = ibmmq.MD()
    assert queue.get(None, md, no_wait(ibmmq, extra=syncpoint)) == b'first'
    assert md.BackoutCount == 1
    conn.backout()
    other_queue.put(b'third')
    md = ibmmq.MD()
    assert queue.get(None, md, no_wait(ibmmq, extra=syncpoint)) == b'first'   # back at its original position
    assert md.BackoutCount == 2
    conn.commit()
    assert [m.data for m in qm.messages(QUEUE)] == [b'third']

def test_put_under_syncpoint_is_invisible_until_commit(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    conn, other = connect(), connect()
    queue, other_queue = open_queue(ibmmq, conn), open_queue(ibmmq, other)
    queue.put(b'pending', ibmmq.MD(), ibmmq.PMO(Options=CMQC.MQPMO_SYNCPOINT))
    with pytest.raises(ibmmq.MQMIError) as info:
        other_queue.get(None, ibmmq.MD(), no_wait(ibmmq))
    assert_reason(info, ibmmq, 'MQRC_NO_MSG_AVAILABLE')
    assert qm.depth(QUEUE) == 1
    assert [m.committed for m in qm.messages(QUEUE, include_uncommitted=True)] == [False]
    conn.backout()
    assert qm.depth(QUEUE) == 0

    queue.put(b'kept', ibmmq.MD(), ibmmq.PMO(Options=CMQC.MQPMO_SYNCPOINT))
    conn.commit()
    assert other_queue.get(None, ibmmq.MD(), no_wait(ibmmq)) == b'kept'

def test_a_commit_wakes_a_waiting_getter(ibmmq, connect):
    CMQC = ibmmq.CMQC
    conn = connect()
    open_queue(ibmmq, conn, CMQC.MQOO_OUTPUT).put(b'uow', ibmmq.MD(), ibmmq.PMO(Options=CMQC.MQPMO_SYNCPOINT))
    getter = open_queue(ibmmq, connect(), CMQC.MQOO_INPUT_SHARED)
    threading.Timer(0.2, conn.commit).start()
    assert getter.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=5000)) == b'uow'

def test_a_normal_disconnect_commits(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    qm.put(QUEUE, b'got')
    conn = connect()
    queue = open_queue(ibmmq, conn)
    queue.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_SYNCPOINT))
    queue.put(b'put', ibmmq.MD(), ibmmq.PMO(Options=CMQC.MQPMO_SYNCPOINT))
    conn.disconnect()
    assert [(m.data, m.committed) for m in qm.messages(QUEUE, include_uncommitted=True)] == [(b'put', True)]

# ################################################################################################################################

def test_stop_breaks_connections_and_start_keeps_committed_messages(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    qm.put(QUEUE, b'committed-1')
    qm.put(QUEUE, b'committed-2')
    conn = connect()
    queue = open_queue(ibmmq, conn)
    assert queue.get(None, ibmmq.MD(), no_wait(ibmmq, extra=CMQC.MQGMO_SYNCPOINT)) == b'committed-1'
    queue.put(b'uncommitted', ibmmq.MD(), ibmmq.PMO(Options=CMQC.MQPMO_SYNCPOINT))

    qm.stop()
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.put(b'x')
    assert_reason(info, ibmmq, 'MQRC_CONNECTION_BROKEN')
    assert info.value.reason == 2009
    with pytest.raises(ibmmq.MQMIError) as info:
        connect()
    assert_reason(info, ibmmq, 'MQRC_Q_MGR_NOT_AVAILABLE')
    with pytest.raises(ibmmq.MQMIError) as info:
        conn.disconnect()
    assert_reason(info, ibmmq, 'MQRC_CONNECTION_BROKEN')

    qm.start()
    queue = open_queue(ibmmq, connect())
    md = ibmmq.MD()
    assert queue.get(None, md, no_wait(ibmmq)) == b'committed-1'
    assert md.BackoutCount == 1
    assert queue.get(None, ibmmq.MD(), no_wait(ibmmq)) == b'committed-2'
    with pytest.raises(ibmmq.MQMIError):
        queue.get(None, ibmmq.MD(), no_wait(ibmmq))

def test_stop_wakes_a_waiting_getter_with_connection_broken(ibmmq, qm, connect):
    CMQC = ibmmq.CMQC
    queue = open_queue(ibmmq, connect())
    threading.Timer(0.2, qm.stop).start()
    started = time.monotonic()
    with pytest.raises(ibmmq.MQMIError) as info:
        queue.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=CMQC.MQWI_UNLIMITED))
    assert_reason(info, ibmmq, 'MQRC_CONNECTION_BROKEN')
    assert time.monotonic() - started < 4

def test_break_connections_leaves_the_queue_manager_running(ibmmq, qm, connect):
    conn = connect()
    qm.break_connections()
    with pytest.raises(ibmmq.MQMIError) as info:
        open_queue(ibmmq, conn)
    assert_reason(info, ibmmq, 'MQRC_CONNECTION_BROKEN')
    open_queue(ibmmq, connect()).put(b'fine')
    assert qm.depth(QUEUE) == 1

# ################################################################################################################################

@pytest.fixture
def local_qm():
    """ A queue manager without connection authentication, for local (bindings) MQCONN connections. """
    qm = QueueManagerStandIn('QMLOCAL', listeners=['localhost(1500)'])
    qm.define_queue(QUEUE)
    with installed(qm):
        yield qm

def test_a_non_shared_handle_belongs_to_its_thread(ibmmq, local_qm):
    conn = ibmmq.QueueManager('QMLOCAL')             # MQCONN: MQCNO_HANDLE_SHARE_NONE
    ibmmq.Queue(conn, QUEUE, ibmmq.CMQC.MQOO_OUTPUT).put(b'own thread')
    errors = []

    def other_thread():
        try:
            ibmmq.Queue(conn, QUEUE, ibmmq.CMQC.MQOO_OUTPUT)
        except ibmmq.MQMIError as e:
            errors.append(e)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert [e.reason for e in errors] == [ibmmq.CMQC.MQRC_HCONN_ERROR]
    assert errors[0].reason == 2018

    # One non-shared handle per thread: a second MQCONN returns the same one with a warning.
    with pytest.raises(ibmmq.MQMIError) as info:
        ibmmq.QueueManager('QMLOCAL')
    assert_reason(info, ibmmq, 'MQRC_ALREADY_CONNECTED')
    assert info.value.comp == ibmmq.CMQC.MQCC_WARNING
    conn.disconnect()
    assert local_qm.depth(QUEUE) == 1

def test_a_shared_handle_works_from_any_thread(ibmmq, local_qm):
    conn = ibmmq.connect('QMLOCAL')                  # connect_with_options adds MQCNO_HANDLE_SHARE_BLOCK
    thread = threading.Thread(target=lambda: ibmmq.Queue(conn, QUEUE, ibmmq.CMQC.MQOO_OUTPUT).put(b'x'))
    thread.start()
    thread.join(10)
    assert local_qm.depth(QUEUE) == 1
    conn.disconnect()

def test_a_no_block_handle_refuses_a_concurrent_call(ibmmq, local_qm):
    CMQC = ibmmq.CMQC
    conn = ibmmq.QueueManager(None)
    conn.connect_with_options('QMLOCAL', cno=ibmmq.CNO(Options=CMQC.MQCNO_HANDLE_SHARE_NO_BLOCK))
    getter = ibmmq.Queue(conn, QUEUE, CMQC.MQOO_INPUT_SHARED | CMQC.MQOO_OUTPUT)
    outcome = []

    def wait_for_a_message():
        try:
            getter.get(None, ibmmq.MD(), ibmmq.GMO(Options=CMQC.MQGMO_WAIT, WaitInterval=1000))
        except ibmmq.MQMIError as e:
            outcome.append(e.reason)

    waiting = threading.Thread(target=wait_for_a_message)
    waiting.start()
    time.sleep(0.2)
    with pytest.raises(ibmmq.MQMIError) as info:
        getter.put(b'x')
    assert_reason(info, ibmmq, 'MQRC_CALL_IN_PROGRESS')
    waiting.join(10)
    assert outcome == [CMQC.MQRC_NO_MSG_AVAILABLE]
    getter.put(b'x')                                 # the handle is free again
    conn.disconnect()
    assert local_qm.depth(QUEUE) == 1

def test_local_connection_to_an_unknown_queue_manager(ibmmq, local_qm):
    with pytest.raises(ibmmq.MQMIError) as info:
        ibmmq.connect('QMNONE')
    assert_reason(info, ibmmq, 'MQRC_Q_MGR_NAME_ERROR')

# ################################################################################################################################

def test_helpers_put_messages_depth(ibmmq, qm):
    CMQC = ibmmq.CMQC
    md = qm.put(QUEUE, b'hello', CorrelId=b'X' * 24, Priority=7)
    qm.put(QUEUE, 'text')
    assert qm.depth(QUEUE) == 2
    messages = qm.messages(QUEUE)
    assert [m.data for m in messages] == [b'hello', b'text']
    assert messages[0].msg_id == md.MsgId and messages[0].correl_id == b'X' * 24
    assert messages[1].md.Format == CMQC.MQFMT_STRING
    assert messages[0].backout_count == 0
    for _ in range(3):
        qm.put(QUEUE, b'fill')
    with pytest.raises(ibmmq.MQMIError) as info:
        qm.put(QUEUE, b'one too many')
    assert_reason(info, ibmmq, 'MQRC_Q_FULL')
    with pytest.raises(KeyError, match='NO.SUCH.QUEUE'):
        qm.depth('NO.SUCH.QUEUE')

def test_install_rejects_a_second_queue_manager_with_the_same_name(qm):
    with pytest.raises(ValueError, match='QM1'):
        install(QueueManagerStandIn('QM1', listeners=['localhost(1600)']))
    with pytest.raises(ValueError, match='listen'):
        install(QueueManagerStandIn('QM2', listeners=[CONN_NAME]))

def test_uninstall_breaks_connections(ibmmq, qm, connect):
    conn = connect()
    uninstall(qm)
    with pytest.raises(ibmmq.MQMIError) as info:
        open_queue(ibmmq, conn)
    assert_reason(info, ibmmq, 'MQRC_HCONN_ERROR')
    with pytest.raises(ibmmq.MQMIError) as info:
        connect()
    assert_reason(info, ibmmq, 'MQRC_HOST_NOT_AVAILABLE')

def test_begin_is_refused_without_xa_resource_managers(ibmmq, connect, local_qm):
    with pytest.raises(ibmmq.MQMIError) as info:
        connect().begin()
    assert_reason(info, ibmmq, 'MQRC_ENVIRONMENT_ERROR')
    local = ibmmq.QueueManager('QMLOCAL')
    with pytest.raises(ibmmq.MQMIError) as info:
        local.begin()
    assert_reason(info, ibmmq, 'MQRC_NO_EXTERNAL_PARTICIPANTS')
    assert info.value.comp == ibmmq.CMQC.MQCC_WARNING
    local.disconnect()
