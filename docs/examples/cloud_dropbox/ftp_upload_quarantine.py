# -*- coding: utf-8 -*-

# Going further than the article: the FTP service for production. One file that cannot be uploaded
# does not hold back the others, and a file that keeps failing is moved aside after a few runs and
# reported by name, instead of being retried forever. The count of failed attempts is kept on the
# FTP server itself (a small file per name in /.attempts), so it survives restarts and anyone with
# an FTP client can see it.

import os

from zato.server.service import Service

FILE_DIR = '/'
ATTEMPTS_DIR = '/.attempts'
FAILED_DIR = '/failed'
MAX_ATTEMPTS = 3


class APIChannelSchedulerUploadQuarantine(Service):
    """ Uploads every file of FILE_DIR to Dropbox; after MAX_ATTEMPTS failed runs a file goes to FAILED_DIR.
    """
    name = 'api.channel.scheduler.upload.quarantine'

    def handle(self):
        conn = self.outgoing.ftp.get('My FTP Connection')
        uploaded, failed = [], []
        for file_name in conn.listdir(FILE_DIR):
            full_path = os.path.join(FILE_DIR, file_name)
            if conn.isdir(full_path):  # /failed and /.attempts live here too
                continue
            try:
                self.invoke('api.connector.dropbox', {'file_name': file_name, 'data': conn.getbytes(full_path)})
            except Exception as exc:
                failed.append(file_name)
                self.record_failure(conn, file_name, full_path, exc)
                continue
            conn.remove(full_path)  # only after Dropbox has the file
            self.forget_failures(conn, file_name)
            uploaded.append(file_name)
        self.response.payload = {'uploaded': uploaded, 'failed': failed}

    def record_failure(self, conn, file_name, full_path, exc):
        attempts_path = os.path.join(ATTEMPTS_DIR, file_name)
        attempts = int(conn.gettext(attempts_path)) + 1 if conn.exists(attempts_path) else 1
        if attempts < MAX_ATTEMPTS:
            conn.makedirs(ATTEMPTS_DIR, recreate=True)
            conn.settext(attempts_path, str(attempts))
            self.logger.warning('%s not uploaded (attempt %d of %d), trying again in the next run: %s',
                                full_path, attempts, MAX_ATTEMPTS, exc)
            return
        conn.makedirs(FAILED_DIR, recreate=True)
        conn.move(full_path, os.path.join(FAILED_DIR, file_name), overwrite=True)
        self.forget_failures(conn, file_name)
        self.logger.error('%s not uploaded after %d attempts, moved to %s; fix it and move it back: %s',
                          full_path, attempts, FAILED_DIR, exc)

    def forget_failures(self, conn, file_name):
        attempts_path = os.path.join(ATTEMPTS_DIR, file_name)
        if conn.exists(attempts_path):
            conn.remove(attempts_path)
