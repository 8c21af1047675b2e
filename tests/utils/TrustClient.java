// Copyright (c) contributors to magrathea.secure
// GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later

// A Java client on the JDK's default trust store, as an application uses it: an SSLSocket to a TLS endpoint
// (NTSAPI) and an HttpsURLConnection to an HTTPS URL (REST). Prints one line per connection and exits 0 when
// both verified, 1 when both were refused for their certificate, 2 for anything else (mixed, or not a TLS answer).
//
//   java tests/utils/TrustClient.java HOST PORT URL
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLHandshakeException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;

public class TrustClient {
    static boolean socket(String host, int port) throws Exception {
        try (SSLSocket socket = (SSLSocket) SSLSocketFactory.getDefault().createSocket(host, port)) {
            SSLParameters parameters = socket.getSSLParameters();
            parameters.setEndpointIdentificationAlgorithm("HTTPS");  // check the host name too
            socket.setSSLParameters(parameters);
            socket.setSoTimeout(10000);
            socket.startHandshake();
            System.out.println("SSLSocket " + host + ":" + port + " verified");
            return true;
        } catch (SSLHandshakeException e) {
            System.out.println("SSLSocket " + host + ":" + port + " refused: " + e.getMessage());
            return false;
        }
    }

    static boolean https(String url) throws Exception {
        HttpsURLConnection connection = (HttpsURLConnection) new URL(url).openConnection();
        connection.setConnectTimeout(10000);
        connection.setReadTimeout(10000);
        try {
            System.out.println("HttpsURLConnection " + url + " verified: HTTP " + connection.getResponseCode());
            return true;
        } catch (SSLHandshakeException e) {
            System.out.println("HttpsURLConnection " + url + " refused: " + e.getMessage());
            return false;
        } finally {
            connection.disconnect();
        }
    }

    public static void main(String[] args) throws Exception {
        boolean socket = socket(args[0], Integer.parseInt(args[1]));
        boolean https = https(args[2]);
        System.exit(socket && https ? 0 : (!socket && !https ? 1 : 2));
    }
}
